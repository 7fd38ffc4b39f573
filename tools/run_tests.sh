#!/usr/bin/env bash
# Run the test suite (sets the environment up first when it is missing).
#   bash tools/run_tests.sh              # default suite (target: 10 min on 2 cores)
#   bash tools/run_tests.sh --runslow    # also the slow tests
#   UFO_MM_TEST_WORKERS=1 bash tools/run_tests.sh   # one process (default: one per core)
# Extra arguments go to pytest. The tests run in one pytest-xdist worker per core (at most
# 4), each test file in one worker, each worker and the tools it starts on one thread.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
VENV="${UFO_MM_VENV:-$ROOT/.venv}"
WORKERS="${UFO_MM_TEST_WORKERS:-$(nproc)}"
[ "$WORKERS" -gt 4 ] && WORKERS=4
PARALLEL=()
if [ "$WORKERS" -gt 1 ]; then
  PARALLEL=(-n "$WORKERS" --dist loadfile)
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # two 2-thread processes on 2 cores: 5-10x slower
fi
set +e
"$VENV/bin/python" -m pytest -p no:cacheprovider "${PARALLEL[@]}" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "run_tests: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
