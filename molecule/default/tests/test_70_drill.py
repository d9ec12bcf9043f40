"""Restore drills on the scenario's hosts: the restore_drill role's cron entry and
playbooks/verify_backup.yml run `codeb-backup drill` where each kind's backups are
(pgbackrest, redis and env on `backup`, pg_snapshot on `storage`). After some writes every
kind passes; one damaged artifact of each kind fails exactly that kind, naming it, while
production stays as it was; a drill killed mid-restore is cleaned up by the next one."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from conftest import cluster_port, failure, run_playbook, sql, task_results
from test_50_monitoring import wait_for

CRON = '/etc/cron.d/codeb-restore-drill'
METRICS_DIR = '/var/lib/prometheus/node-exporter'
SCRATCH = '/var/lib/codeb-drill-scratch'  # the role's default
PG_SNAPSHOTS = '/opt/codeb/db-backup/postgresql'
REDIS_STORE = '/opt/codeb/db-backup/redis'
ENV_STORE = '/opt/codeb/env-backup'
ARCHIVE = '/opt/codeb/pgbackrest/archive/codeb'
SENTINEL = 'codeb:drill:sentinel'  # molecule.yml's restore_drill_redis_sentinel_key
ASIDE = '/root/drill-test-aside'
KINDS = {'backup': ['env', 'pgbackrest', 'redis'], 'storage': ['pg_snapshot']}
PROBE_SUM = "SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM drill_probe"

# pids of the processes whose command line names the scratch path, and what is left below
# it besides the lock files and the empty per-kind directories (the path comes from the
# environment, so the checker's own command line does not name it)
_SCAN = r'''
import os


def scratch_procs(scratch, exclude=None):
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open("/proc/%s/cmdline" % pid, "rb").read().replace(b"\0", b" ").decode()
            comm = open("/proc/%s/comm" % pid).read().strip()
        except (OSError, ValueError):
            continue
        # not the checker itself nor the shell that started it (its command line sets SCRATCH)
        if scratch in cmd and int(pid) not in (exclude, os.getpid(), os.getppid()):
            found[pid] = comm
    return found
'''
_PROCS = _SCAN + '''
for pid, comm in scratch_procs(os.environ["SCRATCH"]).items():
    print(pid, comm)
'''
_LEFT = r'''
import os
root = os.environ["SCRATCH"]
for base, dirs, files in os.walk(root):
    for name in files:
        if ".lock" not in name:
            print(os.path.join(base, name))
    if base != root:
        for name in dirs:
            print(os.path.join(base, name))
'''


def _python(host, script):
    return host.check_output('SCRATCH=%s python3 -c %s' % (SCRATCH, shlex.quote(script)))


def scratch_processes(host):
    """``{pid: comm}`` of the processes whose command line names the scratch path."""
    return dict(line.split(None, 1) for line in _python(host, _PROCS).splitlines())


def scratch_left(host):
    return _python(host, _LEFT).split()


def drill_command(host):
    """The role's cron entry's command as cron runs it (`\\%` is cron's escape of `%`),
    printing the drill's JSON instead of discarding it."""
    lines = [line for line in host.file(CRON).content_string.splitlines()
             if 'codeb-backup drill' in line and not line.startswith('#')]
    assert len(lines) == 1, lines
    command = lines[0].split(None, 6)[6].replace('\\%', '%')
    assert command.endswith(' >/dev/null'), command
    return command[:-len(' >/dev/null')]


def run_drill(host):
    run = host.run(drill_command(host))
    result = json.loads(run.stdout) if run.stdout.strip().startswith('{') else None
    return run, result


def drill_status(host):
    """``{(kind, target): last_status}`` of the host's drill metrics files."""
    found = {}
    text = host.check_output('cat %s/codeb_backup_drill_*.prom' % METRICS_DIR)
    for kind, target, value in re.findall(
            r'^codeb_backup_last_status\{kind="drill_(\w+)",target="([^"]*)"\} (\S+)$', text, re.M):
        found[(kind, target)] = float(value)
    return found


def listening_ports(host):
    """TCP ports in LISTEN state on the host."""
    out = host.check_output("cat /proc/net/tcp /proc/net/tcp6 | awk '$4 == \"0A\" {print $2}'")
    return sorted({int(local.rsplit(':', 1)[1], 16) for local in out.split()})


def production_state(storage, backup):
    return dict(
        probe=sql(storage, PROBE_SUM, database='codeb'),
        port=sql(storage, 'SHOW port'), cluster_port=str(cluster_port(storage)),
        archive_mode=sql(storage, 'SHOW archive_mode'),
        redis_keys=storage.check_output("redis-cli --scan --pattern 'codeb:drill:*' | sort | md5sum"),
        sentinel=storage.check_output('redis-cli GET %s' % SENTINEL),
        storage_ports=listening_ports(storage), backup_ports=listening_ports(backup))


def verify_playbook():
    """playbooks/verify_backup.yml against the scenario: (rc, {host: (summary, failure
    message or None)}, parsed)."""
    rc, parsed, stderr = run_playbook('verify_backup.yml', {})
    assert parsed, stderr
    outcome = {}
    for host in KINDS:
        summary = fail = None
        for name, res in task_results(parsed, host):
            if name.endswith("Show each kind's outcome"):
                summary = res['msg']
            if name.endswith('Fail when a drill failed'):
                fail = res['msg'] if res.get('failed') else None
        assert summary is not None, (host, failure(parsed), stderr[-2000:])
        outcome[host] = (summary, fail)
    return rc, outcome, parsed


def _archived(storage, segment):
    row = sql(storage, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
    return row and row[:8] >= segment[:8] and row[8:] >= segment[8:]


def switch_wal(storage):
    """Close the current WAL segment and wait until it is in the repository; its name."""
    segment = sql(storage, 'SELECT pg_walfile_name(pg_switch_wal())')
    wait_for('WAL segment %s archived' % segment, lambda: _archived(storage, segment), interval=0.5)
    return segment


@pytest.fixture(scope='module', autouse=True)
def written(storage, backup):
    """Writes on production and fresh backups of each kind for the drills to restore."""
    if sql(storage, "SELECT count(*) FROM pg_database WHERE datname = 'codeb'") == '0':
        sql(storage, 'CREATE DATABASE codeb')
    sql(storage, 'CREATE TABLE IF NOT EXISTS drill_probe (id int PRIMARY KEY, v text); '
                 'INSERT INTO drill_probe SELECT g, md5(g::text) FROM generate_series(1, 2000) g '
                 'ON CONFLICT DO NOTHING', database='codeb')
    snapshot = [line for line in storage.file('/etc/cron.d/codeb-pg-snapshot').content_string.splitlines()
                if '--database codeb ' in line and not line.startswith('#')][0].split(None, 6)[6]
    ran = storage.run(snapshot)
    assert ran.rc == 0, ran.stdout + ran.stderr
    # the sentinel key first, then a snapshot shipped to the backup host (the redis cron job)
    storage.check_output('redis-cli SET %s written-before-every-snapshot' % SENTINEL)
    for i in range(50):
        storage.check_output('redis-cli SET codeb:drill:key:%d v%d' % (i, i))
    redis_job = [line for line in storage.file('/etc/cron.d/codeb-redis-backup').content_string.splitlines()
                 if 'codeb-backup redis-snapshot' in line and not line.startswith('#')][0]
    ran = storage.run(redis_job.split(None, 6)[6])
    assert ran.rc == 0, ran.stdout + ran.stderr
    # an env store on the backup host, three versions, written by the same core
    for n in range(3):
        backup.check_output('printf %s > /root/drill.env' % shlex.quote('APP_KEY=k%d\nDB=codeb\n' % n))
        backup.check_output('/usr/local/bin/codeb-backup env backup --project drill --environment '
                            'molecule --root %s --src /root/drill.env --trigger manual' % ENV_STORE)
    # a backup taken now: the drills restore it with the WAL archived since
    ran = backup.run('/usr/local/bin/codeb-backup pgbackrest-backup --stanza codeb --type incr '
                     '--run-as pgbackrest')
    assert ran.rc == 0, ran.stdout + ran.stderr
    backup.check_output('mkdir -p %s' % ASIDE)
    storage.check_output('mkdir -p %s' % ASIDE)


def test_every_kind_passes_after_writes_with_the_cron_entrys_command(storage, backup):
    before = production_state(storage, backup)
    results = {}
    for name, host in (('storage', storage), ('backup', backup)):
        run, result = run_drill(host)
        assert run.rc == 0 and result and result['failed'] is False, (name, run.stdout[-3000:], run.stderr[-2000:])
        assert sorted(result['kinds']) == KINDS[name], result['kinds'].keys()
        status = drill_status(host)
        for kind in KINDS[name]:
            values = [v for (k, _t), v in status.items() if k == kind]
            assert values and all(v == 1 for v in values), (name, kind, status)
        assert scratch_processes(host) == {} and scratch_left(host) == [], name
        results[name] = result['kinds']
    pg = {t['target']: t for t in results['storage']['pg_snapshot']['targets']}
    assert pg['codeb']['ok'], pg
    redis = results['backup']['redis']['targets'][0]
    assert redis['snapshots'] and all(s['sentinel_key'] == 'present' for s in redis['snapshots']), redis
    pgbackrest = results['backup']['pgbackrest']['targets'][0]
    assert pgbackrest['ok'] and pgbackrest['recovery_stopped_at'], pgbackrest
    assert production_state(storage, backup) == before


def test_verify_playbook_runs_every_kind_and_passes(storage, backup):
    rc, outcome, parsed = verify_playbook()
    assert rc == 0, (outcome, failure(parsed))
    for host, kinds in KINDS.items():
        summary, fail = outcome[host]
        assert fail is None, (host, fail)
        for kind in kinds:
            assert '%s: passed' % kind in summary, (host, summary)
    assert parsed['stats']['backup']['changed'] == 0 and parsed['stats']['storage']['changed'] == 0


# ---- damage: each helper damages one artifact (keeping the original aside) and returns
# (host name, kind, artifact the failure must name, restore command)

def _newest(host, store, predicate):
    entries = json.loads(host.check_output('cat %s/manifest.json' % store))['entries'].values()
    entries = sorted(entries, key=lambda e: (e.get('time', ''), e.get('file', '')))
    return [e for e in entries if predicate(e) and e.get('status', 'ok') == 'ok'][-1]['file']


_FLIP = ('python3 -c "import os, sys; f = open(sys.argv[1], \'r+b\'); f.seek(os.path.getsize(sys.argv[1]) // 2); '
         'b = f.read(1); f.seek(-1, 1); f.write(bytes([b[0] ^ 255]))" %s')


def _damage_pg_snapshot(storage, backup):
    name = _newest(storage, PG_SNAPSHOTS, lambda e: e.get('database') == 'codeb')
    path = '%s/%s' % (PG_SNAPSHOTS, name)
    storage.check_output('cp -p %s %s/' % (path, ASIDE))
    storage.check_output(_FLIP % path)
    return 'storage', 'pg_snapshot', name, lambda: storage.check_output('cp -p %s/%s %s' % (ASIDE, name, path))


def _damage_redis(storage, backup):
    name = _newest(backup, REDIS_STORE, lambda e: e.get('kind') == 'rdb')
    path = '%s/%s' % (REDIS_STORE, name)
    backup.check_output('cp -p %s %s/' % (path, ASIDE))
    size = int(backup.check_output('stat -c %%s %s' % path))
    backup.check_output('truncate -s %d %s' % (size // 2, path))
    return 'backup', 'redis', name, lambda: backup.check_output('cp -p %s/%s %s' % (ASIDE, name, path))


def _damage_env(storage, backup):
    store = '%s/drill/molecule' % ENV_STORE
    name = json.loads(backup.check_output('cat %s/backup-log.json' % store))['versions'][1]['file']
    path = '%s/%s' % (store, name)
    backup.check_output('cp -p %s %s/' % (path, ASIDE))
    backup.check_output('echo EXTRA=edited-by-hand >> %s' % path)
    return 'backup', 'env', name, lambda: backup.check_output('cp -p %s/%s %s' % (ASIDE, name, path))


def _damage_pgbackrest(storage, backup):
    # WAL written after the newest backup: recovery to a later marker needs this segment
    sql(storage, 'CREATE TABLE IF NOT EXISTS drill_wal (id int); INSERT INTO drill_wal VALUES (1)')
    segment = switch_wal(storage)
    info = json.loads(backup.check_output('runuser -u pgbackrest -- pgbackrest --stanza=codeb '
                                          '--output=json info'))
    stop = info[0]['backup'][-1]['archive']['stop']
    assert stop[8:] < segment[8:], ('the newest backup must be older than the segment', stop, segment)
    moved = backup.check_output('find %s -name %s -print -exec mv {} %s/ \\;'
                                % (ARCHIVE, shlex.quote(segment + '-*'), ASIDE)).split()
    assert moved, 'segment %s not in %s' % (segment, ARCHIVE)

    def put_back():
        for path in moved:
            backup.check_output('mv %s/%s %s' % (ASIDE, path.rsplit('/', 1)[1], path))
    return 'backup', 'pgbackrest', segment, put_back


@pytest.mark.parametrize('damage', [_damage_pg_snapshot, _damage_redis, _damage_env, _damage_pgbackrest],
                         ids=['pg_snapshot-byte-flip', 'redis-truncated-rdb', 'env-edited-version',
                              'pgbackrest-missing-wal'])
def test_damaged_artifact_fails_exactly_its_kind_and_production_is_untouched(storage, backup, damage):
    before = production_state(storage, backup)
    host_name, kind, artifact, put_back = damage(storage, backup)
    try:
        rc, outcome, parsed = verify_playbook()
        assert rc != 0, 'the verify playbook passed with %s damaged' % artifact
        summary, fail = outcome[host_name]
        assert fail and artifact in fail, (artifact, fail)
        assert '%s: FAILED' % kind in summary, summary
        for name, kinds in KINDS.items():
            for other in kinds:
                if other != kind:
                    assert '%s: passed' % other in outcome[name][0], (name, outcome[name])
        if host_name == 'storage':
            assert outcome['backup'][1] is None, outcome['backup']
        status = {**drill_status(storage), **drill_status(backup)}
        failed = sorted({k for (k, _t), v in status.items() if v == 0})
        assert failed == [kind], status
        for name, host in (('storage', storage), ('backup', backup)):
            assert scratch_processes(host) == {} and scratch_left(host) == [], name
    finally:
        put_back()
    after = production_state(storage, backup)
    if kind == 'pgbackrest':  # the damage itself wrote a row in another table
        before.pop('probe'), after.pop('probe')
    assert after == before
    # whole again: every kind passes
    rc, outcome, parsed = verify_playbook()
    assert rc == 0, (outcome, failure(parsed))


# Inside the host (polling through `podman exec` is too slow for a drill of a few seconds):
# start the drill in its own session, wait until a scratch server runs, SIGKILL the drill.
_KILL = _SCAN + r'''
import json, signal, subprocess, sys, time
scratch, command, deadline = os.environ["SCRATCH"], sys.argv[1], time.monotonic() + 180
drill = subprocess.Popen(["/bin/sh", "-c", "exec " + command], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=open("/root/drill-killed.err", "w"))
servers = {}
while not servers:
    servers = dict((pid, comm) for pid, comm in scratch_procs(scratch, drill.pid).items()
                   if comm in ("postgres", "redis-server"))
    if not servers and drill.poll() is not None:
        sys.exit("the drill ended (rc %s) before a scratch server ran: %s"
                 % (drill.returncode, open("/root/drill-killed.err").read()[-2000:]))
    if time.monotonic() > deadline:
        sys.exit("no scratch server within 180 s")
    time.sleep(0.02)
os.kill(drill.pid, signal.SIGKILL)
drill.wait()
print(json.dumps(dict(pid=drill.pid, servers=servers)))
'''


@pytest.mark.parametrize('host_name, kind', [('backup', 'pgbackrest'), ('storage', 'pg_snapshot')])
def test_drill_killed_mid_restore_is_cleaned_up_by_the_next(storage, backup, host_name, kind):
    host = backup if host_name == 'backup' else storage
    before = production_state(storage, backup)
    # the drill itself, without the every-snapshot weekday's shell prefix
    command = drill_command(host).split('; ', 1)[-1].replace(' "$@"', '')
    run = host.run('SCRATCH=%s python3 -c %s %s' % (SCRATCH, shlex.quote(_KILL), shlex.quote(command)))
    assert run.rc == 0, run.stdout + run.stderr
    killed = json.loads(run.stdout)

    run, result = run_drill(host)
    assert run.rc == 0 and result and result['failed'] is False, (run.stdout[-3000:], run.stderr[-2000:])
    cleaned = result['kinds'][kind]['leftovers_cleaned']
    assert cleaned and (cleaned.get('removed') or cleaned.get('stopped')), (killed, cleaned)
    if kind == 'pgbackrest':  # pg_ctl's cluster outlives the drill; the next run stops it
        assert set(killed['servers']) & {str(p) for p in cleaned['stopped']}, (killed, cleaned)
    wait_for('no scratch process left on %s' % host_name, lambda: scratch_processes(host) == {},
             interval=0.5)
    assert scratch_left(host) == []
    status = drill_status(host)
    assert all(v == 1 for v in status.values()), status
    assert production_state(storage, backup) == before
