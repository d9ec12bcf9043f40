#!/usr/bin/env bash
# Build (or reuse) the Debian 12 systemd image molecule's podman containers boot from.
#
# debootstrap --variant=minbase bookworm with the servers' packages baked in, so converge
# needs no network. The mirror is read at run time from this machine's own apt sources;
# no mirror host name is written into the repository.
#
# Usage: scripts/build-image.sh [--force]     (prints the image name on stdout)
# Env:   CODEB_TEST_IMAGE  image name (default localhost/codeb-backup-test:bookworm-<hash>)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/molecule/containers.conf}

packages=(
  python3 python3-apt python3-psycopg2 python3-redis python3-prometheus-client systemd systemd-sysv dbus
  openssh-server openssh-client sudo cron procps iproute2 less rsync zstd
  postgresql-15 postgresql-client-15 pgbackrest redis-server redis-tools nginx-light
  prometheus prometheus-node-exporter prometheus-alertmanager
  python3-fastapi python3-uvicorn curl
)
# The tag changes whenever this script changes, so an old image is never reused for a new
# package list or build recipe.
tag=$(sha256sum "$0" | cut -c1-12)
image=${CODEB_TEST_IMAGE:-localhost/codeb-backup-test:bookworm-$tag}

if [ "${1:-}" != "--force" ] && podman image exists "$image"; then
  echo "$image"
  exit 0
fi

mirror_from_apt_sources() {
  # deb822 sources first: the URI of a stanza whose Suites list contains plain "bookworm".
  local file
  for file in /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    awk '
      BEGIN { RS=""; FS="\n" }
      {
        uri=""; suites=""; types=""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uri=u[1] }
          if ($i ~ /^Suites:/) { suites=" " $i " " }
          if ($i ~ /^Types:/)  { types=$i }
        }
        if (uri != "" && types ~ /deb( |$)/ && suites ~ / bookworm /) { print uri; exit }
      }' "$file"
  done | head -n1
  # one-line format
  if [ -f /etc/apt/sources.list ]; then
    awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list
  fi
}
mirror=${CODEB_DEBIAN_MIRROR:-$(mirror_from_apt_sources | head -n1)}
if [ -z "$mirror" ]; then
  echo "build-image: no 'bookworm' source found in /etc/apt/sources.list(.d); set CODEB_DEBIAN_MIRROR" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
include=$(IFS=,; echo "${packages[*]}")
fail_with_log() {
  tail -n 40 "$work/debootstrap.log" >&2
  echo "build-image: $1 failed (log above)" >&2
  exit 1
}
# Two stages, so that nothing the build host runs can leak into the image. The first stage
# only downloads and unpacks (it needs the mirror). The second stage runs the packages'
# maintainer scripts, and those look at the network: postgresql-common's pg_createcluster
# gives the new 15/main cluster the first port it can bind, so on a host whose own
# PostgreSQL holds 5432 (e.g. after `make demo`) a one-stage build in a chroot, which
# shares the host's network, made an image whose cluster is on 5433. The second stage needs
# no network, so it runs in new, empty network, IPC, UTS and mount namespaces: every port is
# free there and the image is the same whatever the host runs.
echo "build-image: debootstrap bookworm (download, unpack) into $rootfs" >&2
debootstrap --foreign --variant=minbase --include="$include" bookworm "$rootfs" "$mirror" \
  >"$work/debootstrap.log" 2>&1 || fail_with_log "debootstrap (first stage)"
echo "build-image: debootstrap second stage (configure) in an isolated network namespace" >&2
unshare --net --ipc --uts --mount --propagation private \
  chroot "$rootfs" /debootstrap/debootstrap --second-stage >>"$work/debootstrap.log" 2>&1 \
  || fail_with_log "debootstrap (second stage)"

# The roles find the cluster's port themselves, but the image is a fixed test fixture:
# check that it came out as a fresh Debian server's (15/main on 5432), or refuse it.
cluster_conf="$rootfs/etc/postgresql/15/main/postgresql.conf"
cluster_port=$(sed -n 's/^port *= *\([0-9]*\).*/\1/p' "$cluster_conf")
if [ "$cluster_port" != 5432 ]; then
  echo "build-image: the image's cluster 15/main is on port '${cluster_port}', not 5432 ($cluster_conf)" >&2
  exit 1
fi

# A container gets its identity at first boot: no machine-id, no host keys baked in
# (ssh.service regenerates them via sshd-keygen / ssh-keygen -A below).
: > "$rootfs/etc/machine-id"
rm -f "$rootfs"/etc/ssh/ssh_host_*
mkdir -p "$rootfs/etc/systemd/system/ssh.service.d"
cat > "$rootfs/etc/systemd/system/ssh.service.d/keygen.conf" <<'CONF'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
CONF
# Units that make no sense in a container.
for unit in systemd-remount-fs.service getty.target console-getty.service \
            systemd-logind.service apt-daily.timer apt-daily-upgrade.timer; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
done
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

echo "build-image: importing $image" >&2
tar -C "$rootfs" -c . | podman import \
  --change 'CMD ["/lib/systemd/systemd"]' --change 'ENV container=podman' - "$image" >&2
echo "$image"
