from weight_convert import signals
from weight_convert.cli import main

signals.exit_after_run(main())
