#!/usr/bin/env bash
# `make demo` (after scripts/install-deps.sh and the venv): on a Debian 12 machine, as root,
# make sure the local PostgreSQL 15 cluster runs and has the seed's databases, snapshot them
# with playbooks/backup.yml on inventories/local, then show where the snapshots are.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$root/ansible.cfg"
# The databases the local inventory lists (inventories/local/group_vars/codeb_storage/).
DEMO_DATABASES=${DEMO_DATABASES:-"codeb worb workb da_rak"}

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it starts the local PostgreSQL cluster and writes /opt/codeb)" >&2
  exit 1
fi

as_pg() { runuser -u postgres -- "$@"; }

# 1. The local cluster 15/main exists and is running (no systemd needed).
if ! pg_lsclusters -h | awk '$1 == "15" && $2 == "main"' | grep -q .; then
  echo "demo: creating cluster 15/main"
  pg_createcluster 15 main >/dev/null
fi
if ! pg_lsclusters -h | awk '$1 == "15" && $2 == "main" {print $4}' | grep -q online; then
  echo "demo: starting cluster 15/main"
  pg_ctlcluster 15 main start
fi
for _ in $(seq 60); do
  as_pg pg_isready -q && break
  sleep 1
done
as_pg pg_isready -q || { echo "demo: PostgreSQL 15/main did not come up" >&2; exit 1; }

# 2. The local Redis (backup.yml's Redis play snapshots it) answers on 127.0.0.1:6379.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "demo: starting redis-server"
  install -d -o redis -g redis -m 0755 /run/redis
  runuser -u redis -- redis-server /etc/redis/redis.conf --daemonize yes
  for _ in $(seq 30); do
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
    sleep 1
  done
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "demo: redis-server did not answer on 127.0.0.1:6379" >&2
  exit 1
fi
if [ "$(redis-cli -h 127.0.0.1 -p 6379 --raw dbsize)" = 0 ]; then
  redis-cli -h 127.0.0.1 -p 6379 mset demo:session:1 alice demo:session:2 bob >/dev/null
fi

# 3. The databases exist, each with a little sample data.
for db in $DEMO_DATABASES; do
  if [ -z "$(as_pg psql -XAtc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
    echo "demo: creating database $db with sample data"
    as_pg createdb "$db"
    as_pg psql -X -q -v ON_ERROR_STOP=1 -d "$db" <<'SQL'
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int REFERENCES customers,
                     amount numeric(10,2), note text, meta jsonb);
INSERT INTO customers SELECT g, 'customer ' || g, now() - g * interval '1 hour'
  FROM generate_series(1, 500) g;
INSERT INTO orders SELECT g, 1 + g % 500, round((random() * 300)::numeric, 2), md5(g::text),
  jsonb_build_object('items', 1 + g % 7) FROM generate_series(1, 5000) g;
SQL
  fi
done

# 4. Snapshot them all (PostgreSQL databases, then Redis).
ansible-playbook -i inventories/local/hosts.yml playbooks/backup.yml

# 5. Where are they, how big, verified?
backup_dir=$(awk '/^codeb_pg_snapshot_dir:/ {print $2}' inventories/local/group_vars/codeb_storage/pg_snapshot.yml)
echo
echo "Snapshots in ${backup_dir} (manifest: ${backup_dir}/manifest.json):"
PYTHONPATH="$root/.collections" python - "$backup_dir" <<'PY'
import sys
from ansible_collections.codeb.backup.plugins.module_utils.postgres.store import list_snapshots
snaps = list_snapshots(sys.argv[1])
print('%-45s %12s  %-8s %s' % ('file', 'bytes', 'verified', 'sha256'))
for s in snaps:
    print('%-45s %12d  %-8s %s' % (s['file'], s['size_bytes'], 'yes' if s['verified'] else 'NO',
                                   s['sha256'][:16] + '...'))
print('%d snapshots, %d bytes in total' % (len(snaps), sum(s['size_bytes'] for s in snaps)))
PY
if [ -d /opt/codeb/db-backup/redis ]; then
  echo
  echo "Redis snapshots in /opt/codeb/db-backup/redis:"
  ls -l /opt/codeb/db-backup/redis
fi
echo
echo "List them any time with the codeb.backup.pg_snapshot_info module, or on a host set up by playbooks/setup-backup.yml: codeb-backup pg-snapshot-list"
