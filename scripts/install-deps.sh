#!/usr/bin/env bash
# Install the Debian packages the collection's tests, demo and benchmarks need, if missing.
# Idempotent: installs nothing when everything is present. Needs root (CI runs as root).
set -euo pipefail
packages=(
  postgresql-15 postgresql-client-15 redis-server redis-tools pgbackrest
  nginx-light openssh-server openssh-client sudo cron rsync zstd make
  podman runc debootstrap uidmap slirp4netns fuse-overlayfs
  prometheus prometheus-node-exporter prometheus-alertmanager python3-venv python3-redis python3-prometheus-client python3-fastapi python3-uvicorn
  shellcheck  # ansible-test sanity checks shell scripts only where it is installed
)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages ${missing[*]}; run as root or install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Debian starts some servers on install where an init system runs; the tests start their
# own throwaway servers on random ports and do not use these.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
