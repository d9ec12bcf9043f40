#!/usr/bin/env bash
# Run the multi-host molecule scenario: build or reuse the test image, then `molecule test`.
# Usage: scripts/molecule.sh [molecule sub-command and args]   (default: test)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export CONTAINERS_CONF="$root/molecule/containers.conf"
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$root/ansible.cfg"
export ANSIBLE_COLLECTIONS_PATH="$root/.collections"
CODEB_TEST_IMAGE=$("$root/scripts/build-image.sh")
export CODEB_TEST_IMAGE
cd "$root"
if [ $# -eq 0 ]; then
  set -- test
fi
exec molecule "$@"
