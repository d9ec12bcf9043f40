# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PITR restore: `playbooks/restore.yml` against the raw pgBackRest commands, one run.

Needs the molecule containers up and converged (storage, backup):
    scripts/molecule.sh converge && CONTAINERS_CONF=molecule/containers.conf \
        .venv/bin/python bench/pitr_restore_bench.py [--scale N] [--rounds R]

--scale N grows a `bench` database on the storage host with `pgbench -i -s N` (about 15 MiB
per unit) and takes a full backup, so the restore has a realistic size. Then, R times and
alternating which goes first (the page cache favours whoever runs second):

* ours: `ansible-playbook playbooks/restore.yml -e target=latest -e restore_to=scratch`
  (validate the request against the repository, flush the WAL on the storage host so every
  commit so far is reachable, restore into the scratch directory, start, wait for promotion);
* raw: on the backup host, `pgbackrest restore` into a directory, minimal config,
  `pg_ctl start`, poll until promoted: what an operator would type, without validation and
  without the flush (it recovers to whatever WAL happens to be archived).

Prints each run, the medians, their ratio, and where the playbook's time went (per task).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAW_DIR = '/opt/codeb/pitr-raw'
RAW = ("set -e; runuser -u pgbackrest -- bash -c 'set -e; "
       "pg_ctl=/usr/lib/postgresql/15/bin/pg_ctl; "
       "if [ -f %(d)s/postmaster.pid ]; then $pg_ctl -D %(d)s -m immediate stop; fi; "
       "rm -rf %(d)s; mkdir -m 700 %(d)s; "
       "pgbackrest --stanza=codeb --reset-pg1-host --pg1-path=%(d)s --archive-mode=off restore; "
       "touch %(d)s/postgresql.conf %(d)s/pg_ident.conf; echo \"local all all trust\" > %(d)s/pg_hba.conf; "
       "$pg_ctl -D %(d)s -l %(d)s/log -w -o \"-h \\\"\\\" -p 5498 -k %(d)s -c hot_standby=off\" start; "
       "for i in $(seq 3000); do "
       "[ \"$(psql -h %(d)s -p 5498 -U postgres -d postgres -Atc \"select pg_is_in_recovery()\" 2>/dev/null)\" = f ] "
       "&& exit 0; sleep 0.1; done; exit 1'" % {'d': RAW_DIR})


def sh(host, command):
    proc = subprocess.run(['podman', 'exec', host, 'bash', '-c', command], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit('%s: %s failed: %s' % (host, command[:80], proc.stderr[-2000:]))
    return proc.stdout.strip()


def inventory():
    found = sorted(glob.glob(os.path.expanduser('~/.ansible/tmp/molecule.*.default/inventory')),
                   key=os.path.getmtime)
    if not found:
        raise SystemExit('no molecule inventory: run scripts/molecule.sh converge first')
    return found[-1]


def grow(scale):
    print('growing database bench to pgbench scale %d and taking a full backup ...' % scale, flush=True)
    sh('storage', 'runuser -u postgres -- dropdb --if-exists bench && runuser -u postgres -- createdb bench')
    sh('storage', 'runuser -u postgres -- pgbench -q -i -s %d bench' % scale)
    sh('backup', '/usr/local/bin/codeb-backup pgbackrest-backup --stanza codeb --type full --run-as pgbackrest')


SCRATCH = '/opt/codeb/pitr-scratch/codeb'


def drop_scratch():
    """Stop and remove the previous scratch cluster outside the timing, as raw() does with its
    own directory (restore.yml would otherwise pay for stopping and deleting it)."""
    sh('backup', 'if [ -f %(d)s/postmaster.pid ]; then runuser -u pgbackrest -- '
                 '/usr/lib/postgresql/15/bin/pg_ctl -D %(d)s -m fast -w stop; fi; rm -rf %(d)s'
       % {'d': SCRATCH})


def ours():
    drop_scratch()
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, '.collections'),
               ANSIBLE_STDOUT_CALLBACK='ansible.posix.json', ANSIBLE_NOCOLOR='1')
    started = time.monotonic()
    proc = subprocess.run([os.path.join(bindir, 'ansible-playbook'), '-i', inventory(),
                           'playbooks/restore.yml', '-e', 'target=latest', '-e', 'restore_to=scratch'],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit('restore.yml failed:\n' + proc.stdout[-3000:] + proc.stderr[-2000:])
    out = json.loads(proc.stdout[proc.stdout.index('{'):])
    tasks = []
    for play in out['plays']:
        for task in play['tasks']:
            span = task['task']['duration']
            seconds = _seconds(span['end']) - _seconds(span['start'])
            tasks.append((task['task']['name'], seconds))
    return elapsed, tasks


def _seconds(stamp):
    from datetime import datetime
    return datetime.strptime(stamp, '%Y-%m-%dT%H:%M:%S.%fZ').timestamp()


def raw():
    started = time.monotonic()
    sh('backup', RAW)
    elapsed = time.monotonic() - started
    sh('backup', 'runuser -u pgbackrest -- /usr/lib/postgresql/15/bin/pg_ctl -D %s -m fast stop; '
                 'rm -rf %s' % (RAW_DIR, RAW_DIR))
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scale', type=int, default=0, help='pgbench scale of the bench database (0: as is)')
    parser.add_argument('--rounds', type=int, default=2)
    args = parser.parse_args()
    if args.scale:
        grow(args.scale)
    size = int(sh('storage', 'runuser -u postgres -- psql -X -At -d postgres -c '
                             '"SELECT sum(pg_database_size(datname)) FROM pg_database"'))
    print('databases on the storage host: %d MiB in all' % (size // 2**20), flush=True)
    ours_times, raw_times, breakdown = [], [], None
    for round_no in range(args.rounds):
        order = ('raw', 'ours') if round_no % 2 == 0 else ('ours', 'raw')
        for way in order:
            if way == 'raw':
                raw_times.append(raw())
                print('  round %d raw pgbackrest restore + start + wait : %6.2f s' % (round_no + 1, raw_times[-1]), flush=True)
            else:
                elapsed, tasks = ours()
                ours_times.append(elapsed)
                breakdown = tasks
                print('  round %d restore.yml                          : %6.2f s' % (round_no + 1, elapsed), flush=True)
    ours_median, raw_median = statistics.median(ours_times), statistics.median(raw_times)
    print('median restore.yml %.2f s, raw %.2f s, ratio %.2fx' % (ours_median, raw_median, ours_median / raw_median))
    print('where restore.yml spent its time (last run; the rest is ansible-playbook start-up):')
    for name, seconds in breakdown:
        print('  %6.2f s  %s' % (seconds, name))
    print('  %6.2f s  total of tasks' % sum(s for _n, s in breakdown))


if __name__ == '__main__':
    main()
