"""pg_snapshot against the real throwaway PostgreSQL 15 cluster (no mocks).

Most cases go through real ansible-playbook (run_module) so they test the module as a
playbook sees it; the kill/lock cases drive the host command ``codeb-backup pg-snapshot``
in a subprocess, exactly as cron runs it.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers.ansible_runner import ROOT, run_module

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.postgres import (
    connection, options, restore, snapshot, store)

MODULE = 'codeb.backup.pg_snapshot'
DB = 'Shop-Data'  # upper case and a dash on purpose

SCHEMA_SQL = """
CREATE SCHEMA sales;
CREATE SCHEMA "HR";
CREATE TABLE public.settings (k text PRIMARY KEY, v jsonb);
CREATE TABLE sales.orders (id bigint PRIMARY KEY, customer text, amount numeric(10,2),
                           at timestamptz, note text);
CREATE INDEX ON sales.orders (customer);
CREATE TABLE "HR"."People" (id int PRIMARY KEY, name text, doc oid);
CREATE TABLE sales.empty_table (id int);
INSERT INTO public.settings SELECT 'k' || g, jsonb_build_object('n', g, 'h', md5(g::text))
  FROM generate_series(1, 50) g;
INSERT INTO sales.orders SELECT g, 'c' || (g % 97), (g * 1.37)::numeric(10,2),
  timestamptz '2026-01-01' + g * interval '1 minute', md5(g::text) FROM generate_series(1, 20000) g;
INSERT INTO "HR"."People" SELECT g, 'person ' || g, lo_from_bytea(0, convert_to(repeat(md5(g::text), 50), 'UTF8'))
  FROM generate_series(1, 5) g;
"""

CHECKSUM_SQL = """
SELECT string_agg(t, ' ' ORDER BY t) FROM (
  SELECT 'settings:' || count(*) || ':' || md5(coalesce(string_agg(s::text, ',' ORDER BY s::text), '')) AS t FROM public.settings s
  UNION ALL
  SELECT 'orders:' || count(*) || ':' || md5(coalesce(string_agg(o::text, ',' ORDER BY o::text), '')) FROM sales.orders o
  UNION ALL
  SELECT 'people:' || count(*) || ':' || md5(coalesce(string_agg(p.id || p.name, ',' ORDER BY p.id), '')) FROM "HR"."People" p
  UNION ALL
  SELECT 'lo:' || count(*) || ':' || md5(coalesce(string_agg(encode(lo_get(p.doc), 'hex'), ',' ORDER BY p.id), ''))
    FROM "HR"."People" p
) x
"""


def _args(pg_cluster, tmp_path, **extra):
    args = dict(database=DB, backup_dir=str(tmp_path / 'backups'), login_host='127.0.0.1',
                login_port=pg_cluster.port, login_password=pg_cluster.password,
                metrics_dir=str(tmp_path / 'metrics'))
    args.update(extra)
    return args


def _snapshot_files(directory):
    if not os.path.isdir(directory):
        return []
    return sorted(n for n in os.listdir(directory) if '.dump' in n)


@pytest.fixture
def shop(pg_cluster):
    pg_cluster.create_database(DB)
    pg_cluster.psql(SCHEMA_SQL, DB)
    return pg_cluster.psql(CHECKSUM_SQL, DB)


def cli(args, **popen):
    code = ('import sys; from ansible_collections.codeb.backup.plugins.module_utils import cli; '
            'sys.exit(cli.main())')
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, '.collections'))
    env.update(popen.pop('env', {}))
    return subprocess.Popen([sys.executable, '-c', code] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **popen)


def _cli_args(pg_cluster, tmp_path, database=DB, extra=()):
    return ['pg-snapshot', '--database', database, '--backup-dir', str(tmp_path / 'backups'),
            '--login-unix-socket', pg_cluster.socket_dir, '--login-port', str(pg_cluster.port),
            '--metrics-dir', str(tmp_path / 'metrics')] + list(extra)


def test_round_trip_schemas_large_objects_parallel_restore(pg_cluster, tmp_path, shop):
    checksum = shop
    made = run_module(MODULE, _args(pg_cluster, tmp_path))
    assert not made.get('failed'), made
    assert made['changed'] is True
    assert made['file'].startswith(DB + '-') and made['file'].endswith('.dump.zst')
    assert made['tables'] == {'"HR"."People"': 5, 'public.settings': 50, 'sales.empty_table': 0,
                              'sales.orders': 20000}
    assert made['large_objects'] == 5
    assert made['size_bytes'] == os.path.getsize(made['path']) > 0
    assert made['duration_seconds'] > 0
    assert os.stat(made['path']).st_mode & 0o777 == 0o600
    entry = Manifest(str(tmp_path / 'backups')).load()[made['file']]
    assert entry['sha256'] == made['sha256'] and entry['status'] == 'ok'
    assert entry['server_version'].startswith('15')

    verified = run_module(MODULE, _args(pg_cluster, tmp_path, state='verified'))
    assert not verified.get('failed'), verified
    assert verified['verified'] is True and verified['changed'] is False
    assert verified['snapshots'][0]['sha256_ok'] and verified['snapshots'][0]['list_ok']

    # change the live data, then restore over it with 2 workers: it must come back exactly
    pg_cluster.psql('DELETE FROM sales.orders WHERE id > 100; DROP TABLE public.settings; '
                    'SELECT lo_unlink(doc) FROM "HR"."People" WHERE id = 1', DB)
    assert pg_cluster.psql(CHECKSUM_SQL, DB, check=False) != checksum
    restored = run_module(MODULE, _args(pg_cluster, tmp_path, state='restored', jobs=2))
    assert not restored.get('failed'), restored
    assert restored['changed'] is True and restored['replaced_existing'] is True
    assert pg_cluster.psql(CHECKSUM_SQL, DB) == checksum
    # no helper databases left behind
    assert pg_cluster.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '\\_codeb\\_%'") == '0'

    # into a new database, as the operator inspecting a snapshot would
    copy = run_module(MODULE, _args(pg_cluster, tmp_path, state='restored',
                                    target_database='Shop-Copy', jobs=2))
    assert not copy.get('failed'), copy
    assert copy['replaced_existing'] is False
    assert pg_cluster.psql(CHECKSUM_SQL, 'Shop-Copy') == checksum
    pg_cluster.psql('DROP DATABASE "Shop-Copy"')

    metrics_file = tmp_path / 'metrics' / 'codeb_backup_pg_snapshot_Shop-Data.prom'
    text = metrics_file.read_text()
    assert 'codeb_backup_last_status{kind="pg_snapshot",target="Shop-Data"} 1' in text
    assert 'codeb_backup_last_size_bytes{kind="pg_snapshot",target="Shop-Data"} %d' \
        % made['size_bytes'] in text

    listed = run_module('codeb.backup.pg_snapshot_info', dict(backup_dir=str(tmp_path / 'backups'),
                                                              database=DB))
    assert listed['count'] == 1 and listed['changed'] is False
    snap = listed['snapshots'][0]
    assert (snap['file'], snap['sha256'], snap['verified']) == (made['file'], made['sha256'], True)
    assert snap['size_bytes'] == made['size_bytes'] and snap['time'] in made['file']


@pytest.mark.parametrize('fmt,compression', [('custom', 'gzip:1'), ('directory', 'none'),
                                             ('custom', 'none')])
def test_other_formats_round_trip(pg_cluster, tmp_path, shop, fmt, compression):
    made = snapshot.snapshot(_args(pg_cluster, tmp_path, format=fmt, compression=compression,
                                   jobs=2))
    assert made['compression'] == compression and made['format'] == fmt
    assert os.path.isdir(made['path']) == (fmt == 'directory')
    assert snapshot.verify(_args(pg_cluster, tmp_path))['verified'] is True
    pg_cluster.psql('TRUNCATE sales.orders', DB)
    restored = restore.restore(_args(pg_cluster, tmp_path, jobs=2))
    assert restored['tables']['sales.orders'] == 20000
    assert pg_cluster.psql(CHECKSUM_SQL, DB) == shop


def test_os_user_runs_tools_as_postgres(pg_cluster, tmp_path, shop):
    """os_user: tools run as postgres over the unix socket; files stay root's, 0600."""
    args = dict(database=DB, backup_dir=str(tmp_path / 'backups'), os_user='postgres',
                login_unix_socket=pg_cluster.socket_dir, login_port=pg_cluster.port,
                metrics_dir=str(tmp_path / 'metrics'))
    made = snapshot.snapshot(args)
    assert os.stat(made['path']).st_uid == 0
    pg_cluster.psql('TRUNCATE sales.orders', DB)
    restore.restore(dict(args, jobs=2))
    assert pg_cluster.psql(CHECKSUM_SQL, DB) == shop
    restore.restore(dict(args, jobs=1))
    assert pg_cluster.psql(CHECKSUM_SQL, DB) == shop


def test_flipped_byte_is_reported_and_refused_live_db_untouched(pg_cluster, tmp_path, shop):
    made = snapshot.snapshot(_args(pg_cluster, tmp_path))
    pg_cluster.psql("UPDATE sales.orders SET note = 'changed after snapshot' WHERE id = 1", DB)
    live = pg_cluster.psql(CHECKSUM_SQL, DB)
    with open(made['path'], 'r+b') as handle:
        handle.seek(made['size_bytes'] // 2)
        byte = handle.read(1)
        handle.seek(made['size_bytes'] // 2)
        handle.write(bytes([byte[0] ^ 0x01]))

    verified = run_module(MODULE, _args(pg_cluster, tmp_path, state='verified'))
    assert verified['failed'] is True
    assert verified['param'] == 'snapshot'
    assert 'sha256 mismatch' in verified['msg'] and made['file'] in verified['msg']
    assert verified['snapshots'][0]['sha256_ok'] is False

    restored = run_module(MODULE, _args(pg_cluster, tmp_path, state='restored',
                                        snapshot=made['file']))
    assert restored['failed'] is True
    assert 'refusing to restore' in restored['msg'] and 'sha256 mismatch' in restored['msg']
    assert pg_cluster.psql(CHECKSUM_SQL, DB) == live
    listed = store.list_snapshots(str(tmp_path / 'backups'), DB)
    assert listed[0]['verified'] is False and listed[0]['status'] == 'failed_verification'
    # "latest good" now has nothing to offer
    latest = run_module(MODULE, _args(pg_cluster, tmp_path, state='restored'))
    assert latest['failed'] is True and latest['param'] == 'snapshot'
    assert pg_cluster.psql(CHECKSUM_SQL, DB) == live


def _wait(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError('timed out waiting for ' + what)


def test_kill_9_leaves_no_final_file_and_lock_makes_second_run_fail(pg_cluster, tmp_path, shop):
    backups = tmp_path / 'backups'
    # Hold an exclusive table lock so pg_dump blocks mid-run, deterministically.
    blocker = subprocess.Popen(
        [os.path.join(pg_cluster.bin, 'psql'), '-X', '-q', '-d', DB],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, **pg_cluster.env))
    blocker.stdin.write('BEGIN; LOCK TABLE sales.orders IN ACCESS EXCLUSIVE MODE;\n'
                        '\\echo locked\n')
    blocker.stdin.flush()
    assert blocker.stdout.readline().strip() == 'locked'
    try:
        run = cli(_cli_args(pg_cluster, tmp_path))
        _wait(lambda: int(pg_cluster.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = '%s'" % DB)) >= 1, 'pg_dump to block on the table lock')
        temps = [n for n in os.listdir(backups) if n.startswith('.tmp-')]
        assert len(temps) == 1 and temps[0].startswith('.tmp-%s-' % DB)

        # a second run of the same job waits for the lock, then fails clearly
        second = cli(_cli_args(pg_cluster, tmp_path, extra=['--lock-timeout', '1']))
        out, err = second.communicate(timeout=120)
        assert second.returncode == 1
        assert json.loads(out)['param'] == 'lock_timeout'
        assert 'another pg_snapshot of database %s is running' % DB in json.loads(out)['msg']
        assert err == '', 'one result: the JSON on stdout'

        os.kill(run.pid, signal.SIGKILL)
        run.wait()
    finally:
        blocker.stdin.write('ROLLBACK;\n')
        blocker.stdin.close()
        blocker.wait()
    # pg_dump died with its parent (no orphan still writing)
    _wait(lambda: pg_cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE "
                                  "application_name = 'pg_dump' AND datname = '%s'" % DB) == '0',
          'the orphaned pg_dump to go away')
    assert _snapshot_files(backups) == [n for n in os.listdir(backups) if n.startswith('.tmp-')]
    assert not [n for n in os.listdir(backups) if n.endswith(('.dump', '.dump.zst'))]
    assert Manifest(str(backups)).load() == {}

    again = cli(_cli_args(pg_cluster, tmp_path))
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    result = json.loads(out)
    assert result['stale_temps_removed'] == temps
    assert _snapshot_files(backups) == [result['file']]
    assert list(Manifest(str(backups)).load()) == [result['file']]


def test_all_older_than_keep_days_keeps_keep_min(pg_cluster, tmp_path, shop):
    now = datetime.datetime.now(datetime.timezone.utc)
    made = []
    for days in (30, 20, 15, 12, 10):
        # keep_days=100 while making them: each run prunes relative to its own "now"
        result = snapshot.snapshot(_args(pg_cluster, tmp_path, keep_days=100),
                                   now=now - datetime.timedelta(days=days))
        made.append(result['file'])
    assert len(_snapshot_files(tmp_path / 'backups')) == 5

    predicted = run_module(MODULE, _args(pg_cluster, tmp_path, state='pruned'), check=True)
    assert predicted['changed'] is True
    assert [p['file'] for p in predicted['pruned']] == [made[1], made[0]]
    assert len(_snapshot_files(tmp_path / 'backups')) == 5

    pruned = run_module(MODULE, _args(pg_cluster, tmp_path, state='pruned'))
    assert not pruned.get('failed'), pruned
    assert pruned['changed'] is True
    assert sorted(p['file'] for p in pruned['pruned']) == sorted(made[:2])
    assert _snapshot_files(tmp_path / 'backups') == sorted(made[2:])
    assert sorted(Manifest(str(tmp_path / 'backups')).load()) == sorted(made[2:])

    second = run_module(MODULE, _args(pg_cluster, tmp_path, state='pruned'))
    assert second['changed'] is False and second['pruned'] == []
    assert _snapshot_files(tmp_path / 'backups') == sorted(made[2:])


def test_check_mode_writes_nothing(pg_cluster, tmp_path, shop):
    result = run_module(MODULE, _args(pg_cluster, tmp_path), check=True)
    assert not result.get('failed'), result
    assert result['changed'] is True and result['file'].startswith(DB + '-')
    assert not (tmp_path / 'backups').exists()
    assert not (tmp_path / 'metrics').exists()

    snapshot.snapshot(_args(pg_cluster, tmp_path))
    before = {n: os.path.getmtime(tmp_path / 'backups' / n)
              for n in os.listdir(tmp_path / 'backups')}
    for state in ('present', 'restored', 'verified', 'pruned'):
        checked = run_module(MODULE, _args(pg_cluster, tmp_path, state=state), check=True)
        assert not checked.get('failed'), checked
    after = {n: os.path.getmtime(tmp_path / 'backups' / n) for n in os.listdir(tmp_path / 'backups')}
    assert after == before


@pytest.mark.parametrize('name', ['../etc', ''])
def test_bad_database_names_are_refused(pg_cluster, tmp_path, name):
    result = run_module(MODULE, _args(pg_cluster, tmp_path, database=name))
    assert result['failed'] is True
    assert result['param'] == 'database' and 'database' in result['msg']
    assert not (tmp_path / 'backups').exists() and not (tmp_path / 'metrics').exists()


@pytest.mark.parametrize('state', ['present', 'verified', 'restored', 'pruned'])
@pytest.mark.parametrize('name', ['a/b', '..', '.hidden', '-rf', 'x' * 64])
def test_bad_database_names_are_refused_in_every_state(pg_cluster, tmp_path, name, state):
    with pytest.raises(BackupError) as caught:
        snapshot.run_state(_args(pg_cluster, tmp_path, database=name, state=state))
    assert caught.value.param == 'database'
    assert not (tmp_path / 'backups').exists() and not (tmp_path / 'metrics').exists()


@pytest.mark.parametrize('extra,param,text', [
    (dict(database='no_such_db'), 'database', 'does not exist'),
    (dict(login_port=1), 'login_port', 'cannot connect'),
    (dict(login_password='wrong-password'), 'login_password', 'refused the password'),
])
def test_bad_connection_clear_error_nothing_written(pg_cluster, tmp_path, shop, extra, param,
                                                    text):
    result = run_module(MODULE, _args(pg_cluster, tmp_path, **extra))
    assert result['failed'] is True, result
    assert result['param'] == param, result
    assert text in result['msg']
    assert 'wrong-password' not in json.dumps(result)
    assert not (tmp_path / 'backups').exists()


@pytest.mark.parametrize('extra,param,text', [
    (dict(compression='zstd:99'), 'compression', 'level must be 1-19'),
    (dict(compression='lz4'), 'compression', 'compression must be one of'),
    (dict(format='directory', compression='zstd'), 'compression', 'needs format custom'),
    (dict(keep_min=0), 'keep_min', 'keep_min'),
    (dict(jobs=0), 'jobs', 'jobs must be'),
    (dict(backup_dir='relative/dir'), 'backup_dir', 'absolute'),
])
def test_bad_options_clear_error_nothing_written(pg_cluster, tmp_path, shop, extra, param, text):
    with pytest.raises(BackupError) as caught:
        snapshot.snapshot(_args(pg_cluster, tmp_path, **extra))
    assert caught.value.param == param
    assert text in caught.value.msg
    assert not (tmp_path / 'backups').exists() and not (tmp_path / 'metrics').exists()


def test_wrong_types_and_unknown_snapshot(pg_cluster, tmp_path, shop):
    typed = run_module(MODULE, _args(pg_cluster, tmp_path, jobs='many'))
    assert typed['failed'] is True and 'jobs' in typed['msg']
    snapshot.snapshot(_args(pg_cluster, tmp_path))
    for wanted in ('2020-01-01T00:00:00', '../manifest.json'):
        result = run_module(MODULE, _args(pg_cluster, tmp_path, state='restored',
                                          snapshot=wanted))
        assert result['failed'] is True and result['param'] == 'snapshot', result
    unknown_target = run_module(MODULE, _args(pg_cluster, tmp_path, state='restored',
                                              target_database='x/y'))
    assert unknown_target['failed'] is True and unknown_target['param'] == 'target_database'


def test_refused_password_fails_the_dump_not_changed(pg_cluster, tmp_path, shop):
    """Even past the probe, an auth failure of pg_dump itself is a failure, never changed."""
    args = options.check_options(_args(pg_cluster, tmp_path, login_password='nope'))
    with pytest.raises(BackupError) as caught:
        snapshot._run_dump(connection.Connection(args), args, 'bogus', str(tmp_path / 'out'))
    assert caught.value.param == 'login_password'
    failed = run_module(MODULE, _args(pg_cluster, tmp_path, login_password='nope'))
    assert failed['failed'] is True and failed.get('changed') is not True
    status = (tmp_path / 'metrics' / 'codeb_backup_pg_snapshot_Shop-Data.prom').read_text()
    assert 'codeb_backup_last_status{kind="pg_snapshot",target="Shop-Data"} 0' in status
    assert 'last_success_timestamp' not in status


def test_role_installs_cron_that_snapshots_idempotently(pg_cluster, tmp_path, shop):
    """roles/pg_snapshot: a second run changes nothing, the password is only in a 0600
    file, and the exact cron command lines work against the real server."""
    for sub in ('bin', 'cron.d'):
        (tmp_path / sub).mkdir()
    role_vars = {
        'host_cli_lib_dir': str(tmp_path / 'lib'), 'host_cli_path': str(tmp_path / 'bin' / 'cb'),
        'host_cli_python': sys.executable, 'host_cli_install_packages': False,
        'pg_snapshot_install_packages': False, 'pg_snapshot_databases': [DB],
        'pg_snapshot_dir': str(tmp_path / 'backups'),
        'pg_snapshot_cron_file': str(tmp_path / 'cron.d' / 'codeb-pg-snapshot'),
        'pg_snapshot_cli_path': str(tmp_path / 'bin' / 'cb'),
        'pg_snapshot_metrics_dir': str(tmp_path / 'metrics'),
        'pg_snapshot_login_host': '127.0.0.1', 'pg_snapshot_login_port': pg_cluster.port,
        'pg_snapshot_login_password': pg_cluster.password,
        'pg_snapshot_password_file': str(tmp_path / 'etc' / 'pg.password'),
        'pg_snapshot_os_user': '', 'pg_snapshot_login_unix_socket': '',
    }
    play = [{'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
             'vars': {'ansible_python_interpreter': sys.executable},
             'roles': [{'role': 'codeb.backup.pg_snapshot', 'vars': role_vars}]}]
    playbook = tmp_path / 'play.yml'
    playbook.write_text(json.dumps(play))
    from helpers.ansible_runner import run_playbook

    rc, first, err = run_playbook(str(playbook), inventory='localhost,')
    assert rc == 0, err
    assert first['stats']['localhost']['changed'] > 0
    rc, second, err = run_playbook(str(playbook), inventory='localhost,')
    assert rc == 0, err
    changed = [t['task']['name'] for play in second['plays'] for t in play['tasks']
               if t['hosts'].get('localhost', {}).get('changed')]
    assert changed == []

    assert os.stat(tmp_path / 'backups').st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / 'etc' / 'pg.password').st_mode & 0o777 == 0o600
    crontab = (tmp_path / 'cron.d' / 'codeb-pg-snapshot').read_text()
    assert pg_cluster.password not in crontab
    jobs = [line for line in crontab.splitlines() if line and not line.startswith('#')]
    assert len(jobs) == 2
    for state in ('present', 'verified'):
        line = [j for j in jobs if '--state %s' % state in j][0]
        command = line.split(None, 6)[6]  # m h dom mon dow user command
        proc = subprocess.run(['/bin/sh', '-c', command.replace('>/dev/null', '')],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result['database'] == DB
    assert len(_snapshot_files(tmp_path / 'backups')) == 1
    assert 'target="Shop-Data"} 1' in (tmp_path / 'metrics' /
                                       'codeb_backup_pg_snapshot_Shop-Data.prom').read_text()


@pytest.mark.parametrize('jobs', [1, 2])
def test_restore_failing_midway_leaves_live_db_untouched(pg_cluster, tmp_path, shop, jobs):
    """Damage a snapshot *and* its manifest checksum, so the sha256 check passes and the
    failure comes from decompression / pg_restore half-way: the live database must be
    untouched and no temporary database left behind."""
    made = snapshot.snapshot(_args(pg_cluster, tmp_path))
    pg_cluster.psql("INSERT INTO sales.orders VALUES (999999, 'live', 1, now(), 'after')", DB)
    live = pg_cluster.psql(CHECKSUM_SQL, DB)
    with open(made['path'], 'r+b') as handle:
        handle.seek(made['size_bytes'] * 3 // 4)
        handle.write(b'\0' * 64)
    with Manifest(str(tmp_path / 'backups')).update() as entries:
        entries[made['file']]['sha256'] = store.artifact_sha256(made['path'])
    session = subprocess.Popen(  # an app session on the live database
        [os.path.join(pg_cluster.bin, 'psql'), '-X', '-q', '-d', DB],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env=dict(os.environ, **pg_cluster.env))
    try:
        with pytest.raises(BackupError):
            restore.restore(_args(pg_cluster, tmp_path, jobs=jobs))
    finally:
        session.stdin.close()
        session.wait()
    assert pg_cluster.psql(CHECKSUM_SQL, DB) == live
    assert pg_cluster.psql("SELECT datallowconn FROM pg_database WHERE datname = '%s'" % DB) == 't'
    assert pg_cluster.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '\\_codeb\\_%'") == '0'
    assert not [n for n in os.listdir(tmp_path / 'backups') if n.startswith('.tmp-')]
