#!/usr/bin/env bash
# Run the multi-host molecule scenario: build or reuse the test image, then `molecule test`.
# Usage: scripts/molecule.sh [molecule sub-command and args]   (default: test)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# The scenarios use fixed container names and one fixed network: two runs at once on one
# machine would destroy each other's containers. Serialise them (a caller that already
# holds the lock for a sequence of sub-commands sets CODEB_MOLECULE_LOCKED=1).
lock=${CODEB_MOLECULE_LOCK:-/tmp/codeb-molecule.lock}
if [ "${CODEB_MOLECULE_LOCKED:-}" != 1 ]; then
  exec env CODEB_MOLECULE_LOCKED=1 flock "$lock" "$0" "$@"
fi
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
# The default scenario's own network, with a fixed subnet so its containers get fixed
# addresses (molecule/default/molecule.yml). Nothing else is ever attached to it.
scenario=default
prev=
for arg in "$@"; do
  case "$prev" in -s | --scenario-name) scenario=$arg ;; esac
  case "$arg" in --scenario-name=*) scenario=${arg#*=} ;; esac
  prev=$arg
done
network=codeb-molecule
subnet=10.89.77.0/24
if [ "$scenario" = default ] && ! podman network exists "$network"; then
  podman network create --subnet "$subnet" "$network" >/dev/null
fi
rc=0
report="$root/tests/output/molecule-$scenario-verify.log"
mkdir -p "$root/tests/output"
rm -f "$report"
molecule "$@" || rc=$?
if [ "$rc" -ne 0 ] && [ -s "$report" ]; then
  # CI shows the end of the output: put the failing tests' report there.
  echo "=== molecule $scenario failed; pytest report of verify (last 150 lines) ==="
  tail -n 150 "$report"
fi
# `test` and `destroy` remove the containers; then the network goes too.
if [ "$scenario" = default ]; then
  case "$1" in
    test | destroy) podman network rm -f "$network" >/dev/null 2>&1 || true ;;
  esac
fi
exit $rc
