#!/usr/bin/env bash
# Run the test suite (sets the environment up first when it is missing).
#   bash tools/run_tests.sh              # default suite (10.8 min measured on a 2-core AVX2-only EPYC, target 10)
#   bash tools/run_tests.sh --runslow    # also the slow tests
# Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
VENV="${UFO_MM_VENV:-$ROOT/.venv}"
set +e
"$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "run_tests: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit "$rc"
