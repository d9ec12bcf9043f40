#!/usr/bin/env bash
# `make test`: the whole suite. The molecule scenarios (podman containers on their own
# network, about half of the time) run in the background while the local suites run on
# loopback: they share no port, file or process, and the wait is mostly containers and SSH.
# Every part runs even when an earlier one failed; the exit code is non-zero if any failed.
# Usage: scripts/test.sh   (PYTEST_XDIST / PYTEST_ARGS: extra pytest arguments)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
py="$root/.venv/bin/python"
mkdir -p tests/output
molecule_log=tests/output/molecule.log
failed=()

(scripts/molecule.sh && scripts/molecule.sh test -s env_backup) >"$molecule_log" 2>&1 &
molecule_pid=$!
echo "test: molecule scenarios started in the background (pid $molecule_pid, log $molecule_log)"

run() {
  local name=$1
  shift
  echo "=== test: $name"
  "$@" || failed+=("$name")
}
# shellcheck disable=SC2086  # the xdist and pytest arguments are word lists
run pytest "$py" -m pytest -q ${PYTEST_XDIST:-} tests/unit tests/integration tests/faults ${PYTEST_ARGS:-}
run integration-targets scripts/integration-targets.sh
run sanity scripts/sanity.sh
run lint make --no-print-directory lint

echo "=== test: waiting for molecule (pid $molecule_pid)"
wait "$molecule_pid" || failed+=(molecule)
echo "=== test: molecule output (last 200 lines; all of it in $molecule_log)"
tail -n 200 "$molecule_log"

if [ ${#failed[@]} -ne 0 ]; then
  echo "test: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "test: all parts passed"
