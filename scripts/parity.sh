#!/usr/bin/env bash
# Main job: set up, then print the parity table of every building block against every port
# (Keras on TensorFlow / JAX / torch, Flax). Extra arguments go to `weight-convert parity`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$root"
exec weight-convert parity "$@"
