#!/usr/bin/env bash
# Main job: set up, then print the parity table of every building block against every port
# (Keras on TensorFlow / JAX / torch, Flax), then (without arguments) the automatic mask
# generator's agreement table on the shipped trained SAM (scripts/amg_parity.py). Extra
# arguments go to `weight-convert parity` (and skip the generator table).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$root"
status=0
weight-convert parity "$@" || status=$?
if [ $# -eq 0 ]; then
  # the default main job also holds the automatic mask generator on the shipped trained SAM
  echo
  python scripts/amg_parity.py || status=1
fi
exit $status
