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
# Two workers (pytest-xdist; a test file stays on one worker): imports, tracing and compiling
# are single-threaded, so the second core has work while the first waits on them. Files go out in
# the order conftest.py gives them (the longest first), not xdist's (the most tests first).
# ZOO_TEST_WORKERS=0 runs in this process (no workers).
workers=(-n "${ZOO_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder)
[ "${ZOO_TEST_WORKERS:-2}" = 0 ] && workers=()
KERAS_BACKEND=tensorflow python -m pytest -p no:cacheprovider "${workers[@]}" --durations=20 "$@" || status=1
for backend in jax torch; do
  echo "== Keras tests on the $backend backend" >&2
  pass_workers=("${workers[@]}")
  [ "$backend" = torch ] && pass_workers=()  # ~1.5 min: two workers' start-up would eat the gain
  KERAS_BACKEND=$backend python -m pytest -p no:cacheprovider "${pass_workers[@]}" -m "keras and not slow" -q --durations=10 "$@"
  rc=$?
  # 5 = nothing selected (e.g. -k matched no Keras test): not a failure.
  if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then status=1; fi
done
exit $status
