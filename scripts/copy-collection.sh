#!/usr/bin/env bash
# ansible-test must run from a path ending in ansible_collections/<namespace>/<name>: copy
# the tracked (and new, unignored) files of this checkout to
# DIR/ansible_collections/codeb/backup and print that path. Used by sanity.sh and
# integration-targets.sh.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$1/ansible_collections/codeb/backup"
mkdir -p "$dest"
cd "$root"
while IFS= read -r -d '' file; do
  case "$file" in .collections/*) continue ;; esac
  # a tracked file deleted in the work tree is simply not copied
  if [ -e "$file" ] || [ -L "$file" ]; then cp --parents -P "$file" "$dest"/; fi
done < <(git ls-files -z --cached --others --exclude-standard)
echo "$dest"
