import sys

from weight_convert.cli import main

sys.exit(main())
