#!/usr/bin/env bash
# ansible-test must run from a path ending in ansible_collections/<namespace>/<name>:
# copy the checkout there (copy-collection.sh) and run sanity with no ignore file.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
SANITY_VENV=${SANITY_VENV:-$root/.venv-sanity}
if [ ! -x "$SANITY_VENV/bin/ansible-test" ]; then
  python3 -m venv "$SANITY_VENV"
  "$SANITY_VENV/bin/pip" install -q "$(grep '^ansible-core==' "$root/requirements.txt")"
fi
# ansible-test bootstraps pip in the venvs of its import test with a script downloaded from
# a host CI cannot reach; put an offline stand-in where it caches that script.
site=$("$SANITY_VENV/bin/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')
pip_version=$(grep -oP "pip='\K[0-9.]+" "$site/_internal/python_requirements.py")
cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if [ ! -f "$cache" ]; then
  mkdir -p "$(dirname "$cache")"
  cp "$root/scripts/files/get_pip_offline.py" "$cache"
fi
PYVER=$("$SANITY_VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest=$("$root/scripts/copy-collection.sh" "$work")
cd "$dest"
# ansible-test's --venv mode downloads a pip bootstrap script from a host CI cannot reach,
# so sanity runs --local in a venv of its own, where --requirements installs its pins.
"$SANITY_VENV/bin/ansible-test" sanity --local --requirements --python "$PYVER" --color no "$@"
