"""Restore drills (``codeb-backup drill``) against stores made by the real core from real
servers: a PostgreSQL 15 cluster, Redis 7 and the env store. No mocks.

The stores are made once per module; a test that damages one copies them first, so every
test starts from whole stores."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile

import pytest

from faults.harness import read_metrics, run_cli
from helpers.servers import RedisServer, wait_for

from ansible_collections.codeb.backup.plugins.module_utils import metrics
from ansible_collections.codeb.backup.plugins.module_utils.drill.run import run_drills
from ansible_collections.codeb.backup.plugins.module_utils.env import jobs as env_jobs
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.postgres.snapshot import run_state
from ansible_collections.codeb.backup.plugins.module_utils.redis import snapshot as redis_snapshot

DATABASES = ('drill_shop', 'drill_ledger')
SENTINEL = 'codeb:drill:sentinel'
INSTANCE = 'cache'
ENV_TARGETS = (('worb', 'production'), ('worb', 'staging'))
ROWS_SQL = ("SELECT (SELECT count(*) FROM items) || ',' || (SELECT count(*) FROM notes)")


def _scratch_parent():
    """A directory the scratch cluster's OS user (postgres) can traverse: pytest's own
    temp tree is 0700 root."""
    path = tempfile.mkdtemp(prefix='codeb-test-drill-')
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope='module')
def production(pg_cluster, tmp_path_factory):
    """Real stores made by the real core, and the production servers they came from."""
    base = tmp_path_factory.mktemp('drill-stores')
    pg_dir, redis_dir, env_root = base / 'pg', base / 'redis', base / 'env'
    metrics_dir = str(base / 'backup-metrics')
    for i, db in enumerate(DATABASES):
        pg_cluster.create_database(db)
        pg_cluster.psql('CREATE TABLE items (id int PRIMARY KEY, name text);'
                        'CREATE TABLE notes (id serial, body text);'
                        'INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, %d) g;'
                        "INSERT INTO notes (body) SELECT 'n' || g FROM generate_series(1, 7) g;"
                        % (300 + i * 50), db)
        for _round in range(2):  # two kept snapshots per database
            run_state(dict(database=db, backup_dir=str(pg_dir), login_host='127.0.0.1',
                           login_port=pg_cluster.port, login_password=pg_cluster.password,
                           metrics_dir=metrics_dir, state='present'))
    redis_base = str(tmp_path_factory.mktemp('drill-redis'))
    server = RedisServer(redis_base, appendonly=True)
    server.start()
    server.settle()
    client = server.client()
    client.set(SENTINEL, 'written before every snapshot')
    for i in range(200):
        client.set('key:%d' % i, 'v%d' % i)
    redis_snapshot.take_snapshot(dict(login_host='127.0.0.1', login_port=server.port),
                                 backup_dir=str(redis_dir), instance=INSTANCE,
                                 metrics_dir=metrics_dir)
    for project, environment in ENV_TARGETS:
        for n in range(3):
            env_jobs.backup(str(env_root), project, environment,
                            content='APP_SECRET=s%d\nDB_URL=postgres://x/%s\n' % (n, environment),
                            metrics_dir=metrics_dir)
    yield dict(pg=str(pg_dir), redis=str(redis_dir), env=str(env_root), server=server,
               cluster=pg_cluster)
    server.stop()


@pytest.fixture
def stores(production, tmp_path):
    """Copies of the stores this test may damage, a scratch path and a metrics dir."""
    copy = dict(production)
    for name in ('pg', 'redis', 'env'):
        copy[name] = str(tmp_path / name)
        shutil.copytree(production[name], copy[name], symlinks=True)
    copy['metrics'] = str(tmp_path / 'metrics')
    parent = _scratch_parent()
    copy['scratch'] = os.path.join(parent, 'scratch')
    yield copy
    shutil.rmtree(parent, ignore_errors=True)


def _params(stores, **extra):
    params = dict(scratch_path=stores['scratch'], pg_backup_dir=stores['pg'],
                  redis_backup_dir=stores['redis'], redis_instance=INSTANCE,
                  redis_sentinel_key=SENTINEL, env_root=stores['env'],
                  metrics_dir=stores['metrics'])
    params.update(extra)
    return params


def _argv(stores, *extra):
    argv = ['drill', '--scratch-path', stores['scratch'], '--pg-backup-dir', stores['pg'],
            '--redis-backup-dir', stores['redis'], '--redis-instance', INSTANCE,
            '--redis-sentinel-key', SENTINEL, '--env-root', stores['env'],
            '--metrics-dir', stores['metrics']]
    return argv + list(extra)


def _production_state(production):
    cluster = production['cluster']
    return dict(rows={db: cluster.psql(ROWS_SQL, db) for db in DATABASES},
                databases=cluster.psql("SELECT string_agg(datname, ',' ORDER BY datname) "
                                       "FROM pg_database"),
                pg_port=cluster.psql('SHOW port'),
                redis_keys=production['server'].client().dbsize(),
                redis_port=production['server'].client().config_get('port')['port'])


def _status(stores):
    """``{(kind, target): last_status}`` of every drill metrics file, each checked by
    ``promtool check metrics``."""
    found = {}
    for name in sorted(os.listdir(stores['metrics'])):
        path = os.path.join(stores['metrics'], name)
        with open(path) as handle:
            text = handle.read()
        check = subprocess.run(['promtool', 'check', 'metrics'], input=text, text=True,
                               capture_output=True, check=False)
        assert check.returncode == 0, (name, check.stdout, check.stderr, text)
        values = read_metrics(path)
        labels = text.split('codeb_backup_last_status{', 1)[1].split('}', 1)[0]
        kind = labels.split('kind="', 1)[1].split('"', 1)[0]
        target = labels.split('target="', 1)[1].split('"', 1)[0]
        found[(kind, target)] = values
    return found


def _scratch_processes(scratch):
    """PIDs of processes whose command line names the scratch path."""
    pids = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as handle:
                if scratch.encode() in handle.read():
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


def _scratch_left(scratch):
    """Everything below the scratch path except the lock files and the empty kind dirs."""
    left = []
    for base, dirs, files in os.walk(scratch):
        left += [os.path.join(base, f) for f in files if '.lock' not in f]
        if base != scratch:
            left += [os.path.join(base, d) for d in dirs]
    return left


def _all_targets():
    return ([('drill_pg_snapshot', db) for db in DATABASES] + [('drill_redis', INSTANCE)]
            + [('drill_env', '%s/%s' % t) for t in ENV_TARGETS])


def test_every_drill_passes_on_whole_stores_and_production_is_untouched(production, stores):
    before = _production_state(production)
    result = run_drills(_params(stores, pg_every_snapshot=True))
    assert result['failed'] is False, result['msg']
    pg = result['kinds']['pg_snapshot']
    assert [t['target'] for t in pg['targets']] == sorted(DATABASES)
    for target in pg['targets']:
        assert target['ok'] and len(target['snapshots']) == 2, target
        assert all(s['row_check'] == 'ok' and s['rows'] > 300 for s in target['snapshots'])
    redis = result['kinds']['redis']['targets'][0]
    assert sorted(s['format'] for s in redis['snapshots']) == ['aof', 'rdb']
    assert all(s['keys'] == 201 and s['sentinel_key'] == 'present' for s in redis['snapshots'])
    env = result['kinds']['env']['targets']
    assert [(t['target'], t['versions']) for t in env] == [('worb/production', 3),
                                                           ('worb/staging', 3)]
    status = _status(stores)
    assert sorted(status) == sorted(_all_targets())
    for values in status.values():
        assert values['codeb_backup_last_status'] == 1, values
        assert values['codeb_backup_drill_checks_failed'] == 0, values
        assert 0 <= values['codeb_backup_drill_recovery_point_lag_seconds'] < 3600, values
        assert 'codeb_backup_last_success_timestamp_seconds' in values
    assert _scratch_left(stores['scratch']) == []
    assert _scratch_processes(stores['scratch']) == []
    assert _production_state(production) == before


def _flip_byte(path, offset):
    with open(path, 'r+b') as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _newest(store, predicate):
    entries = [e for e in Manifest(store).entries() if predicate(e)]
    return entries[-1]['file']


def _damage_pg(stores):
    name = _newest(stores['pg'], lambda e: e.get('database') == 'drill_shop')
    path = os.path.join(stores['pg'], name)
    _flip_byte(path, os.path.getsize(path) // 2)
    return 'drill_pg_snapshot', 'drill_shop', name


def _damage_redis(stores):
    name = _newest(stores['redis'], lambda e: e.get('kind') == 'rdb')
    path = os.path.join(stores['redis'], name)
    os.truncate(path, os.path.getsize(path) // 2)
    return 'drill_redis', INSTANCE, name


def _damage_env(stores):
    store = os.path.join(stores['env'], 'worb', 'staging')
    with open(os.path.join(store, 'backup-log.json')) as handle:
        name = json.load(handle)['versions'][1]['file']
    with open(os.path.join(store, name), 'ab') as handle:
        handle.write(b'EXTRA=edited by hand\n')
    return 'drill_env', 'worb/staging', name


@pytest.mark.parametrize('damage', [_damage_pg, _damage_redis, _damage_env],
                         ids=['pg_snapshot-byte-flip', 'redis-truncated-rdb', 'env-edited-version'])
def test_damage_fails_exactly_that_drill_naming_the_artifact(production, stores, damage):
    kind, target, artifact = damage(stores)
    before = _production_state(production)
    run = run_cli(_argv(stores))
    assert run.rc == 1 and run.result and run.result['failed'] is True, run
    assert artifact in run.result['msg'], run.result['msg']
    short = kind[len('drill_'):]
    for name, result in run.result['kinds'].items():
        for outcome in result['targets']:
            if (name, outcome['target']) == (short, target):
                assert outcome['ok'] is False and artifact in outcome['error'], outcome
                assert [f['artifact'] for f in outcome['failed_checks']] == [artifact], outcome
            else:
                assert outcome['ok'] is True, outcome
    status = _status(stores)
    assert sorted(status) == sorted(_all_targets())
    for key, values in status.items():
        failed = key == (kind, target)
        assert values['codeb_backup_last_status'] == (0 if failed else 1), (key, values)
        assert values['codeb_backup_drill_checks_failed'] == (1 if failed else 0), (key, values)
    assert _scratch_left(stores['scratch']) == []
    assert _production_state(production) == before


def test_killed_mid_restore_the_next_run_cleans_up_and_passes(production, stores):
    before = _production_state(production)
    # SIGKILL right before the first pg_restore: the scratch cluster is running, recorded,
    # and its scratch database exists.
    run = run_cli(_argv(stores, '--kinds', 'pg_snapshot'), at='spawn=--exit-on-error:1')
    assert run.killed and 'KILL-POINT' in run.err, run
    record = os.path.join(stores['scratch'], '.drill-pg_snapshot.json')
    with open(record) as handle:
        left = json.load(handle)
    assert left['processes'] and left['dirs'], left
    assert any(os.path.isdir(d) for d in left['dirs']), left
    result = run_drills(_params(stores, kinds=['pg_snapshot']))
    assert result['failed'] is False, result['msg']
    cleaned = result['kinds']['pg_snapshot']['leftovers_cleaned']
    assert cleaned['removed'] == left['dirs'], cleaned
    assert not os.path.exists(record)
    wait_for(lambda: _scratch_processes(stores['scratch']) == [], 30,
             'the killed run\'s scratch cluster to be gone')
    assert _scratch_left(stores['scratch']) == []
    assert _production_state(production) == before


def test_leftover_scratch_server_of_a_killed_run_is_stopped(production, stores):
    """A scratch server that outlived its run (no parent-death signal reached it) is
    stopped by the next run, found by the pid, start time and command line recorded."""
    first = run_cli(_argv(stores, '--kinds', 'redis'), at='spawn=redis-server:1')
    assert first.killed, first
    scratch_root = os.path.join(stores['scratch'], 'redis')
    os.makedirs(scratch_root, exist_ok=True)
    server_dir = os.path.join(scratch_root, 'redis-rdb-leftover')
    os.mkdir(server_dir)
    proc = subprocess.Popen(['redis-server', '--port', '0', '--unixsocket',
                             os.path.join(server_dir, 'redis.sock'), '--dir', server_dir,
                             '--save', ''], stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        from ansible_collections.codeb.backup.plugins.module_utils.redis.connection import (
            proc_start_time)
        wait_for(lambda: proc_start_time(proc.pid) is not None, 30, 'redis-server')
        record_path = os.path.join(stores['scratch'], '.drill-redis.json')
        with open(record_path) as handle:
            record = json.load(handle)
        record['dirs'].append(server_dir)
        record['processes'].append(dict(pid=proc.pid, start_time=proc_start_time(proc.pid),
                                        program='redis-server', needle=server_dir))
        with open(record_path, 'w') as handle:
            json.dump(record, handle)
        result = run_drills(_params(stores, kinds=['redis']))
        assert result['failed'] is False, result['msg']
        assert proc.pid in result['kinds']['redis']['leftovers_cleaned']['stopped']
        assert proc.wait(30) is not None
        assert not os.path.exists(server_dir)
        assert _scratch_left(stores['scratch']) == []
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize('extra, param', [
    (dict(kinds=['pg_snapshot', 'tape']), 'kinds'),
    (dict(pg_databases=['../etc']), 'pg_databases'),
    (dict(env_targets=['worb/../../etc']), 'env_targets'),
    (dict(env_targets=['worb']), 'env_targets'),
    (dict(redis_instance='a/b'), 'redis_instance'),
    (dict(scratch_path='relative/dir'), 'scratch_path'),
    # the restored clusters' sockets below it would exceed the 107 bytes of a socket path
    (dict(scratch_path='/tmp/codeb-drill-' + 'x' * 40), 'scratch_path'),
    (dict(scratch_reserve_mb=-1), 'scratch_reserve_mb'),
    (dict(kinds=['pgbackrest']), 'pgbackrest_stanza'),
    (dict(kinds=['pgbackrest'], pgbackrest_stanza='../x'), 'pgbackrest_stanza'),
])
def test_bad_input_names_the_parameter_and_changes_nothing(stores, extra, param):
    run = run_cli(_argv(stores) + [arg for key, value in extra.items() for item in
                                   (value if isinstance(value, list) else [value])
                                   for arg in ('--' + key.replace('_', '-'), str(item))])
    assert run.rc == 1 and run.result['failed'] is True, run
    assert run.result['param'] == param, run.result
    assert not os.path.exists(stores['scratch']) and not os.path.exists(stores['metrics'])


def test_scratch_path_in_a_production_data_directory_is_refused(production, stores):
    cluster = production['cluster']
    for scratch in (cluster.data, os.path.join(cluster.data, 'drill'),
                    os.path.join(production['server'].base, 'drill')):
        run = run_cli(_argv(dict(stores, scratch=scratch)))
        assert run.rc == 1 and run.result['param'] == 'scratch_path', run
        assert 'production data directory' in run.result['msg'] or \
            'PostgreSQL data directory' in run.result['msg'], run.result
        assert not os.path.exists(os.path.join(cluster.data, 'drill'))
        assert not os.path.exists(os.path.join(production['server'].base, 'drill'))
    assert not os.path.exists(stores['metrics'])


def test_too_little_scratch_space_fails_naming_the_option_before_restoring(stores):
    result = run_drills(_params(stores, kinds=['pg_snapshot', 'env'],
                                scratch_reserve_mb=1 << 40))
    assert result['failed'] is True
    for target in result['kinds']['pg_snapshot']['targets']:
        assert target['ok'] is False and target['param'] == 'scratch_path', target
        assert 'scratch_reserve_mb' in target['error'], target
    assert all(t['ok'] for t in result['kinds']['env']['targets'])
    assert _scratch_left(stores['scratch']) == []
    status = _status(stores)
    assert status[('drill_pg_snapshot', 'drill_shop')]['codeb_backup_last_status'] == 0


def test_metrics_file_names_follow_the_job_convention(stores):
    run_drills(_params(stores, kinds=['env']))
    path = metrics.metrics_path(stores['metrics'], 'drill_env', 'worb/production')
    assert os.path.exists(path)


def test_row_count_differing_from_the_manifest_fails_naming_the_snapshot(stores):
    """The check only a restore can make: the archive is whole (sha256 and pg_restore
    --list pass) but restores other row counts than the snapshot recorded."""
    name = _newest(stores['pg'], lambda e: e.get('database') == 'drill_ledger')
    with Manifest(stores['pg']).update() as entries:
        entries[name]['tables']['public.items'] += 1
    result = run_drills(_params(stores, kinds=['pg_snapshot']))
    targets = dict((t['target'], t) for t in result['kinds']['pg_snapshot']['targets'])
    assert targets['drill_shop']['ok'] is True
    failed = targets['drill_ledger']
    assert failed['ok'] is False and name in failed['error'], failed
    assert 'does not match its manifest' in failed['error'], failed
    assert 'public.items' in failed['error'], failed


def test_redis_key_count_and_sentinel_are_checked(stores):
    name = _newest(stores['redis'], lambda e: e.get('kind') == 'aof')
    with Manifest(stores['redis']).update() as entries:
        entries[name]['keys'] += 5
    result = run_drills(_params(stores, kinds=['redis'], redis_sentinel_key='never-written'))
    target = result['kinds']['redis']['targets'][0]
    assert target['ok'] is False, target
    problems = dict((f['artifact'], f['error']) for f in target['failed_checks'])
    rdb = _newest(stores['redis'], lambda e: e.get('kind') == 'rdb')
    assert sorted(problems) == sorted([name, rdb]), problems
    assert 'manifest expects 206' in problems[name], problems
    assert "sentinel key 'never-written'" in problems[rdb], problems
    assert _status(stores)[('drill_redis', INSTANCE)]['codeb_backup_drill_checks_failed'] == 2
