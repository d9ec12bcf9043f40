# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""WAL archiving and PITR restore: our way against the naive way, side by side, one run.

Needs the molecule containers up and converged (storage, backup):
    scripts/molecule.sh converge && CONTAINERS_CONF=molecule/containers.conf \
        .venv/bin/python bench/pgbackrest_bench.py [segments]

1. Archiving: the same WAL (N segments of incompressible rows) archived over the same SSH
   link by pgBackRest async archive-push (our archive_command) and by the seed's
   `rsync -a %p backup:/…/%f`. Prints segments/s, the largest .ready backlog, and the ratio.
2. Restore: `playbooks/restore.yml -e target=latest -e restore_to=scratch` against the raw
   pgBackRest commands it wraps (restore into a directory, start, wait for promotion).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def timed(argv, env=None):
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, env=env, cwd=ROOT)
    return time.monotonic() - started


def main():
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

    print('restore: playbooks/restore.yml target=latest restore_to=scratch vs raw pgbackrest')
    bindir = os.path.dirname(sys.executable)
    inventory = sorted(__import__('glob').glob(os.path.expanduser('~/.ansible/tmp/molecule.*.default/inventory')))[-1]
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, '.collections'))
    ours_restore = timed([os.path.join(bindir, 'ansible-playbook'), '-i', inventory,
                          'playbooks/restore.yml', '-e', 'target=latest', '-e', 'restore_to=scratch'], env)
    raw_dir = '/opt/codeb/pitr-raw'
    raw = ("set -e; runuser -u pgbackrest -- bash -c 'set -e; "
           "pg_ctl=/usr/lib/postgresql/15/bin/pg_ctl; [ -f %(d)s/postmaster.pid ] && $pg_ctl -D %(d)s -m immediate stop || true; "
           "rm -rf %(d)s; mkdir -m 700 %(d)s; "
           "pgbackrest --stanza=codeb --reset-pg1-host --pg1-path=%(d)s --archive-mode=off restore; "
           "touch %(d)s/postgresql.conf %(d)s/pg_hba.conf %(d)s/pg_ident.conf; echo \"local all all trust\" > %(d)s/pg_hba.conf; "
           "$pg_ctl -D %(d)s -l %(d)s/log -w -o \"-h \\\"\\\" -p 5498 -k %(d)s -c hot_standby=off\" start; "
           "for i in $(seq 3000); do "
           "[ \"$(psql -h %(d)s -p 5498 -U postgres -d postgres -Atc \"select pg_is_in_recovery()\" 2>/dev/null)\" = f ] "
           "&& exit 0; sleep 0.2; done; exit 1'"
           % {'d': raw_dir})
    started = time.monotonic()
    sh('backup', raw)
    raw_restore = time.monotonic() - started
    sh('backup', "runuser -u pgbackrest -- /usr/lib/postgresql/15/bin/pg_ctl -D %s -m fast stop; rm -rf %s"
       % (raw_dir, raw_dir))
    size = sh('backup', 'du -sb /opt/codeb/pitr-scratch/codeb | cut -f1')
    print('  restore.yml (validate, flush WAL, restore, start, wait): %6.1f s' % ours_restore)
    print('  raw pgbackrest restore + pg_ctl start + wait          : %6.1f s' % raw_restore)
    print('  ratio restore.yml/raw                                 : %.2fx  (data dir %d MiB)'
          % (ours_restore / raw_restore, int(size) // 2**20))


if __name__ == '__main__':
    main()
