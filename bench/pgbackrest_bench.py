# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL archiving and RPO: our way against the naive way, side by side, one run.
(The PITR restore comparison is bench/pitr_restore_bench.py.)

Needs the molecule containers up and converged (storage, backup):
    scripts/molecule.sh converge && CONTAINERS_CONF=molecule/containers.conf \
        .venv/bin/python bench/pgbackrest_bench.py [segments]

1. Archiving: the same WAL (N segments of incompressible rows) archived over the same SSH
   link by pgBackRest async archive-push (our archive_command) and by the seed's
   `rsync -a %p backup:/…/%f`. Prints segments/s, the largest .ready backlog, and the ratio.

RPO, archiving only against the streaming standby (needs the standby, `codeb_pg_standby:
true`, as molecule/default sets it):
    CONTAINERS_CONF=molecule/containers.conf .venv/bin/python bench/pgbackrest_bench.py rpo [seconds]

2. A steady small write load on the primary (one row per 0.2 s, own transaction each) for
   ``seconds`` (default 150). For every row: the time from its commit until the WAL segment
   holding it is in the repository (pg_stat_archiver.last_archived_wal; archive_command is
   pgBackRest's async push, which reports a segment archived once the repository has it) —
   the data lost with the storage host if it dies at that moment, at the live
   archive_timeout — against the time until the row is visible on the standby (polled every
   10 ms), plus the primary's replay_lag for the standby. Prints both and the ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

SEED_DIR = '/opt/codeb/wal-archive-seed'


def sh(host, command, check=True):
    proc = subprocess.run(['podman', 'exec', host, 'bash', '-c', command], capture_output=True,
                          text=True, check=False)
    if check and proc.returncode != 0:
        raise SystemExit('%s: %s failed: %s' % (host, command, proc.stderr))
    return proc.stdout.strip()


def sql(query):
    return sh('storage', "runuser -u postgres -- psql -X -At -d postgres -c %s" % json.dumps(query))


def ready():
    return int(sh('storage', 'ls /var/lib/postgresql/15/main/pg_wal/archive_status | grep -c ready$',
                  check=False) or 0)


def archive_run(segments):
    """Write ``segments`` WAL segments; return (seconds until all archived, max backlog)."""
    sql('DROP TABLE IF EXISTS bench_wal')
    sql('CREATE UNLOGGED TABLE IF NOT EXISTS bench_dummy(i int)')
    sql('CREATE TABLE bench_wal(t text)')
    start_failed = int(sql('SELECT failed_count FROM pg_stat_archiver'))
    started = time.monotonic()
    backlog = 0
    last = None
    for _segment in range(segments):
        # ~16 MiB of WAL that does not compress away (md5 text)
        sql("INSERT INTO bench_wal SELECT md5(random()::text) || md5(random()::text) "
            "FROM generate_series(1, 110000)")
        last = sql('SELECT pg_walfile_name(pg_switch_wal())')
        backlog = max(backlog, ready())
    while sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < last:
        backlog = max(backlog, ready())
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    failed = int(sql('SELECT failed_count FROM pg_stat_archiver')) - start_failed
    sql('DROP TABLE bench_wal')
    return elapsed, backlog, failed


def set_archive_command(command):
    sql("ALTER SYSTEM SET archive_command = %s" % sql_literal(command))
    sql('SELECT pg_reload_conf()')
    time.sleep(1)


def sql_literal(text):
    return "'" + text.replace("'", "''") + "'"


RPO_PRIMARY = r"""
import json, sys, threading, time
import psycopg2
seconds, interval, table = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
def connect():
    conn = psycopg2.connect(dbname='postgres', host='/var/run/postgresql')
    conn.autocommit = True
    return conn.cursor()
cur = connect()
cur.execute('CREATE TABLE %s(i int PRIMARY KEY, ts timestamptz NOT NULL DEFAULT clock_timestamp())' % table)
cur.execute("SELECT setting FROM pg_settings WHERE name = 'archive_timeout'")
archive_timeout = int(cur.fetchone()[0])
time.sleep(1)  # let the standby replay the CREATE before the first row
rows, events, lags = [], [], []
done = threading.Event()
def watch():
    watcher = connect()
    last = None
    while True:
        watcher.execute('SELECT last_archived_wal FROM pg_stat_archiver')
        wal = watcher.fetchone()[0]
        if wal != last:
            events.append((time.time(), wal))
            last = wal
        watcher.execute("SELECT extract(epoch FROM replay_lag) FROM pg_stat_replication "
                        "WHERE application_name = 'codeb_standby'")
        lag = watcher.fetchone()
        if lag and lag[0] is not None:
            lags.append(float(lag[0]))
        if done.is_set() and rows and wal and wal[:8] == rows[-1][2][:8] and wal >= rows[-1][2]:
            return
        if done.is_set() and time.time() > done.deadline:
            return
        time.sleep(0.1)
thread = threading.Thread(target=watch)
thread.start()
started = time.time()
i = 0
while time.time() - started < seconds:
    i += 1
    cur.execute('INSERT INTO ' + table + '(i) VALUES (%s)', (i,))
    committed = time.time()
    cur.execute('SELECT pg_walfile_name(pg_current_wal_lsn())')
    rows.append((i, committed, cur.fetchone()[0]))
    time.sleep(max(0.0, started + i * interval - time.time()))
done.deadline = time.time() + archive_timeout + 120
done.set()
thread.join()
print(json.dumps({'archive_timeout': archive_timeout, 'rows': rows, 'events': events, 'lags': lags}))
"""

RPO_STANDBY = r"""
import json, sys, time
import psycopg2
rows_wanted_after, table, port = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = psycopg2.connect(dbname='postgres', host='/var/run/postgresql', port=port)
conn.autocommit = True
cur = conn.cursor()
seen, last, started = [], 0, time.time()
while time.time() - started < rows_wanted_after:
    cur.execute('SELECT to_regclass(%s) IS NOT NULL', (table,))
    if not cur.fetchone()[0]:
        time.sleep(0.01)
        continue
    cur.execute('SELECT coalesce(max(i), 0) FROM ' + table)
    top = cur.fetchone()[0]
    if top > last:
        seen.append((time.time(), top))
        last = top
    time.sleep(0.01)
print(json.dumps(seen))
"""


def exec_python(host, script, args, user='postgres'):
    """Start ``script`` in the container now (stdin fed and closed at once, so several run
    side by side); collect its output with .communicate()."""
    proc = subprocess.Popen(['podman', 'exec', '-i', host, 'runuser', '-u', user, '--', 'python3', '-', *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write(script)
    proc.stdin.close()
    proc.stdin = None
    return proc


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def rpo_run(seconds, interval=0.2, standby_port=5433):
    """Per-row data-loss windows: archiving only vs the streaming standby (see docstring)."""
    table = 'rpo_probe_%d' % int(time.time())
    standby = exec_python('backup', RPO_STANDBY, [str(seconds + 30), table, str(standby_port)])
    primary = exec_python('storage', RPO_PRIMARY, [str(seconds), str(interval), table])
    p_out, p_err = primary.communicate()
    s_out, s_err = standby.communicate()
    if primary.returncode or standby.returncode:
        raise SystemExit('rpo run failed: %s %s' % (p_err, s_err))
    data = json.loads(p_out)
    seen = json.loads(s_out)
    archived, on_standby = [], []
    for i, committed, segment in data['rows']:
        when = next((t for t, wal in data['events'] if wal and wal[:8] == segment[:8] and wal >= segment), None)
        if when is not None:
            archived.append(when - committed)
        visible = next((t for t, top in seen if top >= i), None)
        if visible is not None:
            on_standby.append(visible - committed)
    sql('DROP TABLE %s' % table)
    return data, archived, on_standby


def rpo_main(seconds):
    print('RPO: %d s of one row per 0.2 s on the primary; per row, time from commit until it is safe'
          % seconds)
    data, archived, on_standby = rpo_run(seconds)
    rows = len(data['rows'])
    if not archived or not on_standby:
        raise SystemExit('no measurements: archived %d, on standby %d of %d rows'
                         % (len(archived), len(on_standby), rows))
    print('  rows committed                     : %d (archived measured %d, on standby %d)'
          % (rows, len(archived), len(on_standby)))
    print('  archiving only (archive_timeout %ds, async push) until the WAL is in the repository:'
          % data['archive_timeout'])
    print('      median %7.2f s   p95 %7.2f s   max %7.2f s   mean %7.2f s'
          % (percentile(archived, 0.5), percentile(archived, 0.95), max(archived), sum(archived) / len(archived)))
    print('  with the streaming standby, until the row is visible on the standby (10 ms polls):')
    print('      median %7.3f s   p95 %7.3f s   max %7.3f s   mean %7.3f s'
          % (percentile(on_standby, 0.5), percentile(on_standby, 0.95), max(on_standby),
             sum(on_standby) / len(on_standby)))
    if data['lags']:
        print('  primary pg_stat_replication.replay_lag: median %.3f s  max %.3f s  (%d samples)'
              % (percentile(data['lags'], 0.5), max(data['lags']), len(data['lags'])))
    print('  ratio archiving/standby            : median %.0fx   max %.0fx'
          % (percentile(archived, 0.5) / max(percentile(on_standby, 0.5), 0.001),
             max(archived) / max(*on_standby, 0.001)))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == 'rpo':
        rpo_main(int(sys.argv[2]) if len(sys.argv) > 2 else 150)
        return
    segments = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    sh('backup', 'mkdir -p %s && chown pgbackrest: %s' % (SEED_DIR, SEED_DIR))
    print('archiving %d segments (16 MiB each, incompressible rows) storage -> backup over SSH' % segments)
    ours, ours_backlog, ours_failed = archive_run(segments)
    seed_cmd = 'rsync -a %%p pgbackrest@backup:%s/%%f' % SEED_DIR
    set_archive_command(seed_cmd)
    try:
        seed, seed_backlog, seed_failed = archive_run(segments)
    finally:
        sql('ALTER SYSTEM RESET archive_command')
        sql('SELECT pg_reload_conf()')
        sh('backup', 'rm -rf %s' % SEED_DIR)
    print('  pgBackRest async archive-push : %6.1f s  %5.2f seg/s  max backlog %d  failures %d'
          % (ours, segments / ours, ours_backlog, ours_failed))
    print('  seed rsync -a %%p (no fsync)   : %6.1f s  %5.2f seg/s  max backlog %d  failures %d'
          % (seed, segments / seed, seed_backlog, seed_failed))
    print('  throughput ratio ours/seed    : %.2fx' % (seed / ours))
    repo = sh('backup', 'du -sb /opt/codeb/pgbackrest/archive | cut -f1')
    print('  repository archive size now   : %d MiB' % (int(repo) // 2**20))


if __name__ == '__main__':
    main()
