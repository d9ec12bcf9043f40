#!/usr/bin/env bash
# `make demo` (after scripts/install-deps.sh and the venv): on a Debian 12 machine, as root,
# the whole system on this one machine (inventories/local, the default inventory):
#   1. PostgreSQL 15/main, Redis and the demo databases and .env are there (no systemd needed)
#   2. playbooks/setup-backup.yml: WAL archiving into the local pgBackRest repository and
#      scheduled backups, snapshots, Redis persistence, env backups, the blue-green project
#      worb behind nginx, monitoring
#   3. a backup: pgBackRest incremental and the snapshots of playbooks/backup.yml
#   4. PITR into a scratch cluster of a row written a moment before (playbooks/restore.yml)
#   5. an env restore (playbooks/env.yml)
#   6. two deploys of worb, then a rollback with its database (playbooks/rollback.yml)
#   7. a short status table (codeb-backup status --project worb)
# Every wait has a deadline; a step that fails stops the demo with its message.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$root/ansible.cfg"
# The databases the local inventory lists (inventories/local/group_vars/codeb_storage/).
DEMO_DATABASES=${DEMO_DATABASES:-"codeb worb workb da_rak"}
DEMO_ENV_FILE=/srv/worb/shared/.env
STANZA=codeb
SCRATCH_PORT=5499
start=$(date +%s)

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it starts the local PostgreSQL cluster and writes /opt/codeb)" >&2
  exit 1
fi

as_pg() { runuser -u postgres -- "$@"; }
step() { echo; echo "=== demo ($(($(date +%s) - start)) s): $*"; }
# wait_for SECONDS WHAT COMMAND...: poll COMMAND once a second until it succeeds.
wait_for() {
  local deadline=$(($(date +%s) + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "demo: $what did not happen within the deadline" >&2
      return 1
    fi
    sleep 1
  done
}

step "PostgreSQL 15/main, Redis, the demo databases and the demo .env"
if ! pg_lsclusters -h | awk '$1 == "15" && $2 == "main"' | grep -q .; then
  echo "demo: creating cluster 15/main"
  pg_createcluster 15 main >/dev/null
fi
if ! pg_lsclusters -h | awk '$1 == "15" && $2 == "main" {print $4}' | grep -q online; then
  echo "demo: starting cluster 15/main"
  pg_ctlcluster 15 main start
fi
PGPORT=$(pg_lsclusters --json 15 main | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["port"])')
export PGPORT
wait_for 60 "PostgreSQL 15/main accepting connections" as_pg pg_isready -q

# The local Redis (redis_backup applies its persistence settings live) on 127.0.0.1:6379.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "demo: starting redis-server"
  install -d -o redis -g redis -m 0755 /run/redis
  runuser -u redis -- redis-server /etc/redis/redis.conf --daemonize yes
fi
wait_for 30 "redis-server answering on 127.0.0.1:6379" redis-cli -h 127.0.0.1 -p 6379 ping
if [ "$(redis-cli -h 127.0.0.1 -p 6379 --raw dbsize)" = 0 ]; then
  redis-cli -h 127.0.0.1 -p 6379 mset demo:session:1 alice demo:session:2 bob >/dev/null
fi

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

# The demo app's .env (env_backup and bluegreen back it up).
if [ ! -f "$DEMO_ENV_FILE" ]; then
  install -d -m 0755 "$(dirname "$DEMO_ENV_FILE")"
  printf 'APP_ENV=production\nDATABASE_URL=postgresql:///worb\nFEATURE_X=off\n' >"$DEMO_ENV_FILE"
  chmod 0600 "$DEMO_ENV_FILE"
fi

step "ansible-playbook playbooks/setup-backup.yml (the default inventory: inventories/local)"
ansible-playbook playbooks/setup-backup.yml

# Without systemd the monitoring role installs and configures node_exporter and Prometheus
# but starts neither (docs/monitoring.md): start them here, with the flags it wrote.
if [ "$(ps -p 1 -o comm=)" != systemd ]; then
  start_exporter() {  # NAME BINARY URL: run BINARY $ARGS of /etc/default/NAME as prometheus
    local name=$1 binary=$2 url=$3 ARGS=
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    echo "demo: starting $name"
    # shellcheck disable=SC1090  # the file the monitoring role wrote
    . "/etc/default/$name"
    # shellcheck disable=SC2086  # ARGS is a word list
    (cd /var/lib/prometheus && setsid runuser -u prometheus -- "$binary" $ARGS \
      >>"/var/log/prometheus/$name.log" 2>&1 </dev/null &)
    wait_for 60 "$name answering on $url" curl -fsS -o /dev/null "$url"
  }
  start_exporter prometheus-node-exporter /usr/bin/prometheus-node-exporter http://127.0.0.1:9100/metrics
  start_exporter prometheus /usr/bin/prometheus http://127.0.0.1:9090/-/ready
fi

step "a backup: pgBackRest incremental, then the snapshots of playbooks/backup.yml"
codeb-backup pgbackrest-backup --stanza "$STANZA" --type incr --repo-user postgres \
  --metrics-dir /var/lib/prometheus/node-exporter
ansible-playbook playbooks/backup.yml

step "PITR: a row written now, recovered into a scratch cluster (playbooks/restore.yml)"
marker="demo-$(date +%s)-$$"
as_pg psql -X -q -v ON_ERROR_STOP=1 -d worb \
  -c "CREATE TABLE IF NOT EXISTS pitr_demo (marker text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())" \
  -c "INSERT INTO pitr_demo (marker) VALUES ('$marker')"
# A moment after the commit, in UTC, as restore.yml takes it.
target_time=$(as_pg psql -XAt -d postgres -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
echo "demo: wrote $marker; recovering to $target_time UTC"
ansible-playbook playbooks/restore.yml -e "target_time='$target_time'" -e restore_to=scratch
scratch=/opt/codeb/pitr-scratch/$STANZA
found=$(as_pg psql -XAt -h "$scratch" -p "$SCRATCH_PORT" -d worb -c "SELECT count(*) FROM pitr_demo WHERE marker = '$marker'")
if [ "$found" != 1 ]; then
  echo "demo: the scratch cluster does not have the row $marker" >&2
  exit 1
fi
echo "demo: the scratch cluster (socket $scratch, port $SCRATCH_PORT) has the row $marker"
as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$scratch" -m fast -w stop >/dev/null

step "env restore: change FEATURE_X, back it up, restore the version before (playbooks/env.yml)"
ansible-playbook playbooks/env.yml -e project=worb -e action=backup
before=$(sha256sum "$DEMO_ENV_FILE" | cut -d' ' -f1)
version=$(codeb-backup env list --project worb \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["current"])')
ansible-playbook playbooks/env.yml -e project=worb -e action=set -e '{"values": {"FEATURE_X": "on"}}'
ansible-playbook playbooks/env.yml -e project=worb -e action=restore -e "version=$version"
if [ "$(sha256sum "$DEMO_ENV_FILE" | cut -d' ' -f1)" != "$before" ]; then
  echo "demo: the restored .env differs from version $version" >&2
  exit 1
fi
echo "demo: $DEMO_ENV_FILE is version $version again"

step "blue-green: deploy worb twice (blue, then green), then roll back with its database"
hook="$root/inventories/local/files/deploy-hook.yml"
if [ ! -f /var/lib/codeb-backup/slots/worb.json ]; then
  ansible-playbook playbooks/deploy.yml -e project=worb -e version=v1 -e "bluegreen_deploy_hook=$hook"
  ansible-playbook playbooks/deploy.yml -e project=worb -e version=v2 -e "bluegreen_deploy_hook=$hook"
fi
active_before=$(curl -fsS -H 'Host: worb.localhost' http://127.0.0.1/)
ansible-playbook playbooks/rollback.yml -e project=worb -e restore_db=true
wait_for 15 "nginx serving the other slot of worb" \
  bash -c "[ \"\$(curl -fsS -H 'Host: worb.localhost' http://127.0.0.1/)\" != '$active_before' ]"
echo "demo: worb served \"$active_before\" before the rollback, now \"$(curl -fsS -H 'Host: worb.localhost' http://127.0.0.1/)\""

step "status"
# The collector (cron, every minute) turns the servers and the pgBackRest repository into
# metrics: run its entry once now rather than wait for cron (or for a cron daemon this
# machine may not run), then wait for Prometheus (scrape interval 30 s) to have them.
collector=$(awk '!/^#/ && /collect-metrics/ && !/--pgbackrest-check/ { $1 = $2 = $3 = $4 = $5 = $6 = ""; print; exit }' \
  /etc/cron.d/codeb-monitoring)
sh -c "$collector"
wait_for 90 "Prometheus scraping the collector's pgBackRest metrics from node_exporter" bash -c \
  "curl -fsS 'http://127.0.0.1:9090/api/v1/query?query=count(codeb_backup_pgbackrest_backups)' | grep -q '\"value\"'"
status_config=$(mktemp)
trap 'rm -f "$status_config"' EXIT
cat >"$status_config" <<'JSON'
{"projects": [{"name": "worb", "team": "demo", "databases": ["worb"], "redis_instance": "redis",
               "env_project": "worb"}]}
JSON
# What the status API would answer: the stores' contents (backup_list), and the job
# outcomes Prometheus has (backup_status; without a running Prometheus it says so).
for tool in backup_list backup_status; do
  codeb-backup status --project worb --tool "$tool" --config "$status_config" >"$status_config.$tool" 2>&1 \
    || echo "demo: codeb-backup status --tool $tool failed: $(tail -n 3 "$status_config.$tool")"
done
python3 - "$status_config" <<'PY'
import json, sys
base = sys.argv[1]


def rows(value, prefix=''):
    """(path, text) for every leaf; a list shows how many and its first entry."""
    if isinstance(value, dict):
        for key in sorted(value):
            yield from rows(value[key], prefix + ('.' if prefix else '') + str(key))
    elif isinstance(value, list):
        yield prefix, '%d entries' % len(value)
        if value and isinstance(value[0], dict):
            first = value[0]
            yield prefix + '[0]', ', '.join('%s=%s' % (k, first[k]) for k in sorted(first)
                                            if not isinstance(first[k], (dict, list)))[:100]
    else:
        yield prefix, json.dumps(value)


for tool in ('backup_list', 'backup_status'):
    try:
        with open('%s.%s' % (base, tool)) as handle:
            answer = json.load(handle)
    except ValueError:
        continue
    print('\n%s of worb:' % tool)
    for path, text in rows(answer):
        print('  %-55s %s' % (path, text))
PY
rm -f "$status_config".backup_*
echo
echo "demo: done in $(($(date +%s) - start)) s. Next: docs/pitr.md, docs/bluegreen.md, codeb-backup --help"
