#!/usr/bin/env bash
# Test command: set up, then run the suite. The Keras tests run once per backend, each backend in
# its own process (KERAS_BACKEND is read when keras is first imported). Extra arguments go to
# every pytest run (e.g. `-m slow` for the slow tests, `-x`, `-k NAME`).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh" || exit 1
# setup.sh sets -e; a failing pass must not stop the next backend's pass from running
set +e
cd "$root"
status=0
echo "== tensorflow backend for Keras, plus reference, Flax and framework-free tests" >&2
KERAS_BACKEND=tensorflow python -m pytest -p no:cacheprovider --durations=20 "$@" || status=1
for backend in jax torch; do
  echo "== Keras tests on the $backend backend" >&2
  KERAS_BACKEND=$backend python -m pytest -p no:cacheprovider -m "keras and not slow" -q --durations=10 "$@"
  rc=$?
  # 5 = nothing selected (e.g. -k matched no Keras test): not a failure.
  if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then status=1; fi
done
exit $status
