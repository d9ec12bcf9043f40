#!/usr/bin/env bash
# Runs the ansible-test integration targets (tests/integration/targets) of the module
# contracts on this host. ansible-test must run from a path ending in
# ansible_collections/<namespace>/<name>: copy the tracked (and new, unignored) files there.
# --local with the project's venv: no container, no requirement installs, no network; the
# setup_* targets start throwaway servers on 127.0.0.1 and stop them by PID.
# Extra arguments go to ansible-test (for example a target name, or -v).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$root/.venv}
if [ ! -x "$VENV/bin/ansible-test" ]; then
  echo "integration-targets: $VENV/bin/ansible-test is missing; run 'make venv' first" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/codeb/backup"
mkdir -p "$dest"
cd "$root"
while IFS= read -r -d '' file; do
  case "$file" in .collections/*) continue ;; esac
  # a tracked file deleted in the work tree is simply not copied
  if [ -e "$file" ] || [ -L "$file" ]; then cp --parents -P "$file" "$dest"/; fi
done < <(git ls-files -z --cached --others --exclude-standard)
cd "$dest"
# The targets run modules as root (PostgreSQL's postgres OS user, nginx's user root), and
# the project's ansible.cfg is not the one under test: ansible-test writes its own.
start=$(date +%s)
status=0
"$VENV/bin/ansible-test" integration --local --python-interpreter "$VENV/bin/python" \
  --allow-root --color no "$@" || status=$?
echo "integration-targets: finished in $(( $(date +%s) - start )) s (exit $status)"
exit "$status"
