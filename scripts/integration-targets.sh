#!/usr/bin/env bash
# Runs the ansible-test integration targets (tests/integration/targets) of the module
# contracts on this host, from a copy of the checkout under
# .../ansible_collections/codeb/backup (copy-collection.sh), where ansible-test must run.
# --local with the project's venv: no container, no requirement installs, no network; the
# setup_* targets start throwaway servers on 127.0.0.1 and stop them by PID.
# Extra arguments go to ansible-test (for example a target name, or -v).
set -euo pipefail
# setup_postgresql runs the cluster as the postgres OS user and setup_nginx its workers as
# root: without root the needs/root targets would be skipped, not run.
if [ "$(id -u)" -ne 0 ]; then
  echo "integration-targets: run as root (the targets start servers as other users)" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$root/.venv}
if [ ! -x "$VENV/bin/ansible-test" ]; then
  echo "integration-targets: $VENV/bin/ansible-test is missing; run 'make venv' first" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest=$("$root/scripts/copy-collection.sh" "$work")
cd "$dest"
# ansible-test points ANSIBLE_CONFIG at a configuration of its own for the targets.
start=$(date +%s)
status=0
"$VENV/bin/ansible-test" integration --local --python-interpreter "$VENV/bin/python" \
  --color no "$@" || status=$?
echo "integration-targets: finished in $(( $(date +%s) - start )) s (exit $status)"
exit "$status"
