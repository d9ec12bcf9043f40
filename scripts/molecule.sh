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
# The scenario's own network, with a fixed subnet so the containers get fixed addresses
# (molecule/default/molecule.yml). Nothing else is ever attached to it.
network=codeb-molecule
subnet=10.89.77.0/24
if ! podman network exists "$network"; then
  podman network create --subnet "$subnet" "$network" >/dev/null
fi
rc=0
molecule "$@" || rc=$?
# `test` and `destroy` remove the containers; then the network goes too.
case "$1" in
  test | destroy) podman network rm -f "$network" >/dev/null 2>&1 || true ;;
esac
exit $rc
