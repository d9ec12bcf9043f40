"""redis_snapshot against real redis-server 7 instances (tests/helpers/servers.py).

Every restore here stops a real Redis and starts it again with ``start_command``; the
instances restarted that way daemonize with a pidfile and are stopped by that PID.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest
import redis

from ansible_collections.codeb.backup.plugins.module_utils import durable
from ansible_collections.codeb.backup.plugins.module_utils.redis import options as ropts
from ansible_collections.codeb.backup.plugins.module_utils.redis import restore as rrestore
from ansible_collections.codeb.backup.plugins.module_utils.redis import store as rstore
from ansible_collections.codeb.backup.plugins.module_utils.redis import rdb as rrdb
from ansible_collections.codeb.backup.plugins.module_utils.redis import shipping as rship
from ansible_collections.codeb.backup.plugins.module_utils.redis import persistence as rpers
from ansible_collections.codeb.backup.plugins.module_utils.redis import checks as rchecks
from ansible_collections.codeb.backup.plugins.module_utils.redis import snapshot as rsnap
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError, LockTimeout
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from helpers.ansible_runner import ROOT, run_module
from helpers.servers import RedisServer, wait_for, free_port


@pytest.fixture
def restorable(tmp_path_factory):
    """Start Redis instances that a restore may stop and start again by ``start_command``."""
    started = []

    def start(appendonly=True, password=None, extra_config=None):
        base = str(tmp_path_factory.mktemp('redis-r'))
        config = dict({'pidfile': os.path.join(base, 'redis.pid'),
                       'enable-debug-command': 'yes'}, **(extra_config or {}))
        server = RedisServer(base, appendonly=appendonly, password=password,
                             extra_config=config)
        server.start()
        server.start_command = ['redis-server', server.conf_path, '--daemonize', 'yes']
        server.conn = dict(login_host='127.0.0.1', login_port=server.port,
                           login_password=password)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
        try:
            with open(os.path.join(server.base, 'redis.pid')) as handle:
                pid = int(handle.read().strip())
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


def _sha(path):
    return durable.sha256_file(path)


def _snap(server, backup_dir, **kwargs):
    kwargs.setdefault('metrics_dir', str(backup_dir) + '-metrics')
    return rsnap.take_snapshot(server.conn, backup_dir=str(backup_dir), **kwargs)


def _restore(server, backup_dir, **kwargs):
    kwargs.setdefault('metrics_dir', str(backup_dir) + '-metrics')
    kwargs.setdefault('start_command', server.start_command)
    return rrestore.restore_snapshot(server.conn, backup_dir=str(backup_dir), **kwargs)


class Writer(threading.Thread):
    """Writes w:0, w:1, ... as fast as it can; records when each SET was acknowledged."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.client = server.client()
        self.acked = []  # (index, unix time acknowledged)
        self.stop_event = threading.Event()

    def run(self):
        index = 0
        while not self.stop_event.is_set():
            self.client.set('w:%d' % index, index)
            self.acked.append((index, time.time()))
            index += 1

    def stop(self):
        self.stop_event.set()
        self.join(10)


def test_snapshot_under_writes_restores_every_key_acked_before_the_save(restorable, tmp_path):
    source = restorable(appendonly=True)
    writer = Writer(source)
    writer.start()
    # LASTSAVE has one-second resolution: let the writer run across a second boundary
    while len(writer.acked) < 2000 or writer.acked[-1][1] - writer.acked[0][1] < 1.2:
        time.sleep(0.01)
    result = _snap(source, tmp_path / 'b')
    writer.stop()
    rdb = [e for e in result['snapshots'] if e['kind'] == 'rdb'][0]
    aof = [e for e in result['snapshots'] if e['kind'] == 'aof'][0]
    assert rdb['lastsave'] >= rdb['requested']
    before_save = [i for i, acked in writer.acked if acked < rdb['requested']]
    assert before_save, 'the writer wrote before the snapshot was requested'

    for entry in (rdb, aof):
        target = restorable(appendonly=True)
        restored = _restore(target, tmp_path / 'b', snapshot=entry['file'])
        client = target.client()
        assert restored['keys'] == entry['keys'] == client.dbsize()
        assert restored['loaded_from'] == 'aof'
        present = set(int(k.split(b':')[1]) for k in client.scan_iter('w:*', count=10000))
        # a point-in-time copy: exactly w:0 .. w:n-1, including every key acked before the save
        assert present == set(range(len(present)))
        assert max(before_save) < len(present)


def test_slow_save_waits_for_the_fresh_file_while_seed_copies_the_old_one(restorable, tmp_path):
    server = restorable(appendonly=False)
    client = server.client()
    client.set('old', 1)
    client.save()
    dump = os.path.join(server.base, 'dump.rdb')
    old_sha = _sha(dump)
    client.execute_command('DEBUG', 'POPULATE', 3000, 'fresh')
    client.config_set('rdb-key-save-delay', 2000)  # 3001 keys x 2 ms = about 6 s per save

    box = {}
    ours = threading.Thread(
        target=lambda: box.update(r=_snap(server, tmp_path / 'b', formats=['rdb'])))
    began = time.monotonic()
    ours.start()
    while not int(client.info('persistence')['rdb_bgsave_in_progress']):
        assert ours.is_alive(), box
        time.sleep(0.01)
    # the seed's hourly script, side by side: BGSAVE; sleep 5; cp dump.rdb
    seed = subprocess.run(['sh', '-c', 'redis-cli -p %d BGSAVE; sleep 5; cp %s %s' % (
        server.port, dump, tmp_path / 'seed.rdb')], capture_output=True, text=True, check=False)
    assert seed.returncode == 0, seed.stderr
    ours.join(60)
    waited = time.monotonic() - began
    entry = box['r']['snapshots'][0]
    assert _sha(str(tmp_path / 'seed.rdb')) == old_sha, 'the seed copied the stale file'
    assert rchecks.check_rdb(str(tmp_path / 'seed.rdb'))[0] == 1
    assert entry['keys'] == 3001, 'our snapshot is the fresh one'
    assert entry['bgsave_seconds'] > 5 and waited > 5
    assert entry['lastsave'] >= entry['requested']


def test_aof_snapshot_during_rewrite_is_consistent_and_restores(restorable, tmp_path):
    source = restorable(appendonly=True)
    client = source.client()
    client.execute_command('DEBUG', 'POPULATE', 2000, 'base')
    client.config_set('rdb-key-save-delay', 500)  # makes the rewrite's RDB preamble slow (~1 s)
    writer = Writer(source)
    writer.start()
    client.bgrewriteaof()
    assert int(client.info('persistence')['aof_rewrite_in_progress']) == 1
    result = _snap(source, tmp_path / 'b', formats=['aof'])
    writer.stop()
    client.config_set('rdb-key-save-delay', 0)
    entry = result['snapshots'][0]
    assert client.config_get('auto-aof-rewrite-percentage')['auto-aof-rewrite-percentage'] == '100'
    assert int(client.info('persistence')['aof_rewrites']) >= 1
    # the stored set passes redis-check-aof on its own
    extract = rchecks.verify_artifact(str(tmp_path / 'b'), entry, work_dir=str(tmp_path))
    shutil.rmtree(extract)
    target = restorable(appendonly=True)
    restored = _restore(target, tmp_path / 'b', snapshot='latest', snapshot_format='aof')
    assert restored['keys'] == entry['keys'] == target.client().dbsize()
    assert entry['keys'] >= 2000
    present = set(int(k.split(b':')[1]) for k in target.client().scan_iter('w:*', count=10000))
    assert present == set(range(len(present)))


def test_aof_snapshot_restores_into_an_appendonly_no_instance(restorable, tmp_path):
    source = restorable(appendonly=True)
    source.client().mset({'a%d' % i: i for i in range(500)})
    entry = _snap(source, tmp_path / 'b', formats=['aof'])['snapshots'][0]
    target = restorable(appendonly=False)
    restored = _restore(target, tmp_path / 'b', snapshot=entry['time'], snapshot_format='aof')
    assert restored['loaded_from'] == 'rdb'
    assert target.client().dbsize() == 500 == restored['keys']


def test_rdb_restore_into_appendonly_yes_is_not_lost_to_the_aof(restorable, tmp_path):
    server = restorable(appendonly=True)
    client = server.client()
    client.mset({'k%d' % i: i for i in range(300)})
    _snap(server, tmp_path / 'b', formats=['rdb'])
    client.flushall()
    client.set('after', 1)
    restored = _restore(server, tmp_path / 'b')
    client = server.client()
    assert client.dbsize() == 300 and client.get('after') is None
    # the previous files are kept aside, not deleted
    assert os.path.isdir(os.path.join(restored['aside_dir'], 'appendonlydir'))
    # and the restored data survives another restart (it is in the AOF now)
    with open(os.path.join(server.base, 'redis.pid')) as handle:
        old_pid = int(handle.read().strip())
    client.shutdown(nosave=True)
    wait_for(lambda: not os.path.exists('/proc/%d' % old_pid), 20, 'the stopped redis-server to exit')
    subprocess.run(server.start_command, check=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            if server.client().dbsize() == 300:
                break
        except redis.exceptions.ConnectionError:
            pass
        assert time.monotonic() < deadline, 'restarted Redis did not come back with 300 keys'
        time.sleep(0.1)


def _data_state(server):
    state = {}
    for root, _dirs, files in os.walk(server.base):
        for name in files:
            if name.endswith(('.rdb', '.aof', '.manifest')):
                path = os.path.join(root, name)
                state[os.path.relpath(path, server.base)] = _sha(path)
    return state


def test_corrupted_rdb_is_refused_and_redis_untouched(restorable, tmp_path):
    server = restorable(appendonly=True)
    client = server.client()
    client.mset({'k%d' % i: 'v' * 50 for i in range(200)})
    entry = _snap(server, tmp_path / 'b', formats=['rdb'])['snapshots'][0]
    path = tmp_path / 'b' / entry['file']
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    client.set('live', 'still here')
    pid = client.info('server')['process_id']
    before = _data_state(server)

    # 1. the file no longer matches its manifest sha256
    with pytest.raises(BackupError) as info:
        _restore(server, tmp_path / 'b', snapshot=entry['file'])
    assert info.value.param == 'snapshot' and 'checksum' in info.value.msg
    # that is evidence: the snapshot is marked, and asking for it again says so
    assert Manifest(str(tmp_path / 'b')).load()[entry['file']]['status'] == 'failed_verification'
    with pytest.raises(BackupError) as info:
        _restore(server, tmp_path / 'b', snapshot=entry['file'])
    assert info.value.param == 'snapshot' and 'failed_verification' in info.value.msg
    # 2. damaged before it was hashed (sha256 matches): redis-check-rdb refuses it
    with Manifest(str(tmp_path / 'b')).update() as entries:
        entries[entry['file']]['sha256'] = _sha(str(path))
        entries[entry['file']]['status'] = 'ok'
    with pytest.raises(BackupError) as info:
        _restore(server, tmp_path / 'b', snapshot=entry['file'])
    assert 'redis-check-rdb' in info.value.msg
    assert info.value.param == 'snapshot'  # docs/redis.md: a refused snapshot names snapshot
    assert client.info('server')['process_id'] == pid
    assert client.get('live') == b'still here' and client.dbsize() == 201
    assert _data_state(server) == before
    assert not [n for n in os.listdir(server.base) if n.startswith(ropts.ASIDE_PREFIX)]
    metrics_file = os.path.join(str(tmp_path / 'b') + '-metrics',
                                'codeb_backup_redis_restore_redis.prom')
    assert 'codeb_backup_last_status{kind="redis_restore",target="redis"} 0' in open(
        metrics_file).read()


def test_failed_restore_puts_previous_files_back(restorable, tmp_path):
    server = restorable(appendonly=True)
    client = server.client()
    client.mset({'k%d' % i: i for i in range(100)})
    entry = _snap(server, tmp_path / 'b', formats=['rdb'])['snapshots'][0]
    client.set('newer', 1)
    with Manifest(str(tmp_path / 'b')).update() as entries:
        entries[entry['file']]['keys'] = 999  # the key check after start must fail
        entries[entry['file']]['expires'] = 0
    with pytest.raises(BackupError) as info:
        _restore(server, tmp_path / 'b')
    assert 'rolled back' in info.value.msg and '999' in info.value.msg
    client = server.client()
    assert client.dbsize() == 101 and client.get('newer') == b'1'


def _cli(*args, env=None):
    code = ('import sys; sys.path.insert(0, %r); '
            'from ansible_collections.codeb.backup.plugins.module_utils.cli import main; '
            'sys.exit(main())' % os.path.join(ROOT, '.collections'))
    # /usr/bin/python3 with Debian's python3-redis: what the host command runs under
    return subprocess.Popen(['/usr/bin/python3', '-c', code] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})))


def test_kill_9_mid_copy_leaves_no_partial_file_under_a_final_name(restorable, tmp_path):
    server = restorable(appendonly=False)
    server.client().execute_command('DEBUG', 'POPULATE', 400000, 'big', 200)  # ~100 MB RDB
    backup = tmp_path / 'b'
    proc = _cli('redis-snapshot', '--port', str(server.port), '--backup-dir', str(backup),
                '--formats', 'rdb', '--metrics-dir', str(tmp_path / 'm'))
    temps = []
    while proc.poll() is None and not temps:
        if backup.is_dir():
            temps = [n for n in os.listdir(backup) if n.startswith('.tmp-dump-')
                     and os.path.getsize(backup / n) > 0]
    assert temps, 'the run finished before the copy could be caught: %s' % proc.communicate()[0]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    names = os.listdir(backup)
    assert not [n for n in names if n.startswith('dump-')], names
    assert not os.path.exists(backup / 'current.rdb')
    assert Manifest(str(backup)).load() == {}
    assert [n for n in names if n.startswith('.tmp-dump-')], 'the partial copy is only a temp'

    again = _cli('redis-snapshot', '--port', str(server.port), '--backup-dir', str(backup),
                 '--formats', 'rdb', '--metrics-dir', str(tmp_path / 'm'))
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    result = json.loads(out)
    entry = result['snapshots'][0]
    assert entry['keys'] == 400000
    assert not [n for n in os.listdir(backup) if n.startswith('.tmp-')], 'stale temps cleared'
    assert _sha(str(backup / entry['file'])) == entry['sha256']
    assert os.readlink(backup / 'current.rdb') == entry['file']


def test_cli_password_from_file_and_list(restorable, tmp_path):
    server = restorable(appendonly=True, password='s3cret-pw')
    server.client().set('x', 1)
    pw = tmp_path / 'pw'
    pw.write_text('s3cret-pw\n')
    os.chmod(pw, 0o600)
    proc = _cli('redis-snapshot', '--port', str(server.port), '--password-file', str(pw),
                '--backup-dir', str(tmp_path / 'b'), '--metrics-dir', str(tmp_path / 'm'))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert 's3cret-pw' not in out + err
    listing = _cli('redis-list', '--backup-dir', str(tmp_path / 'b'), '--verify')
    out, err = listing.communicate(timeout=60)
    snaps = json.loads(out)['snapshots']
    assert sorted(s['kind'] for s in snaps) == ['aof', 'rdb'] and all(s['verified'] for s in snaps)
    prom = (tmp_path / 'm' / 'codeb_backup_redis_rdb_redis.prom').read_text()
    assert 'codeb_backup_last_status{kind="redis_rdb",target="redis"} 1' in prom
    assert 'codeb_backup_last_size_bytes{kind="redis_rdb",target="redis"}' in prom

    bad = _cli('redis-snapshot', '--port', str(server.port), '--backup-dir',
               str(tmp_path / 'c'), '--metrics-dir', str(tmp_path / 'm'),
               env={'REDISCLI_AUTH': 'wrong'})
    out, err = bad.communicate(timeout=60)
    assert bad.returncode == 1
    assert json.loads(out)['param'] == 'login_password'
    assert not (tmp_path / 'c').exists()
    assert 'codeb_backup_last_status{kind="redis_rdb",target="redis"} 0' in (
        tmp_path / 'm' / 'codeb_backup_redis_rdb_redis.prom').read_text()


def test_second_concurrent_run_waits_then_fails_clearly(redis_server, tmp_path):
    backup = tmp_path / 'b'
    backup.mkdir()
    conn = dict(login_port=redis_server.port)
    with job_lock(str(backup / ropts.LOCK_NAME), 'test holder'):
        with pytest.raises(LockTimeout) as info:
            rsnap.take_snapshot(conn, backup_dir=str(backup), lock_timeout=0.3, metrics_dir='')
    assert info.value.param == 'lock_timeout'
    assert os.listdir(backup) == [ropts.LOCK_NAME]


def test_retention_keeps_keep_min_and_latest_aof(redis_server, tmp_path):
    backup = str(tmp_path / 'b')
    conn = dict(login_port=redis_server.port)
    redis_server.client().set('r', 1)
    for _round in range(3):
        rsnap.take_snapshot(conn, backup_dir=backup, metrics_dir='', prune_old=False)
    # make every snapshot look 2 days old
    with Manifest(backup).update() as entries:
        for i, entry in enumerate(sorted(entries.values(), key=lambda e: (e['time'], e['file']))):
            entry['time'] = '2020-01-01T00:00:%02d' % i
    result = rsnap.take_snapshot(conn, backup_dir=backup, metrics_dir='', keep_min=2)
    left = Manifest(backup).load()
    kinds = sorted(e['kind'] for e in left.values())
    assert kinds == ['aof', 'rdb', 'rdb'], left.keys()  # newest rdb + 1 old (keep_min 2), 1 aof
    assert len(result['pruned']) == 5
    on_disk = sorted(n for n in os.listdir(backup) if n.startswith(('dump-', 'appendonly-')))
    assert on_disk == sorted(left)
    for kind in ('rdb', 'aof'):
        assert os.readlink(os.path.join(backup, ropts.POINTERS[kind])) in left


def test_import_verifies_sha256_on_arrival(redis_server, tmp_path):
    source = str(tmp_path / 'storage')
    conn = dict(login_port=redis_server.port)
    redis_server.client().set('ship', 1)
    snaps = rsnap.take_snapshot(conn, backup_dir=source, metrics_dir='')['snapshots']
    target = str(tmp_path / 'backup')
    for entry in snaps:
        src = os.path.join(source, entry['file'])
        assert rship.import_snapshot(src, entry, backup_dir=target)['changed'] is True
        assert rship.import_snapshot(src, entry, backup_dir=target)['changed'] is False
    assert sorted(Manifest(target).load()) == sorted(e['file'] for e in snaps)
    # damaged in transit: refused, nothing stored under the final name
    rdb = [e for e in snaps if e['kind'] == 'rdb'][0]
    damaged = tmp_path / 'damaged.rdb'
    data = bytearray(open(os.path.join(source, rdb['file']), 'rb').read())
    data[-3] ^= 1
    damaged.write_bytes(bytes(data))
    other = str(tmp_path / 'other')
    with pytest.raises(BackupError) as info:
        rship.import_snapshot(str(damaged), rdb, backup_dir=other)
    assert info.value.param == 'src' and 'sha256' in info.value.msg
    assert [n for n in os.listdir(other) if not n.startswith('.')] == []
    with pytest.raises(BackupError) as info:
        rship.import_snapshot(str(damaged), dict(rdb, file='../../etc/x.rdb'), backup_dir=other)
    assert info.value.param == 'entry.file'


def test_apply_settings_live_and_idempotent(redis_factory):
    server = redis_factory(appendonly=False)
    conn = dict(login_port=server.port)
    settings = {'appendonly': True, 'appendfsync': 'everysec', 'auto-aof-rewrite-min-size': '64mb',
                'auto-aof-rewrite-percentage': 100, 'save': [[900, 1], [300, 10], [60, 10000]]}
    predicted = rpers.apply_settings(conn, settings, check_mode=True)
    assert predicted['changed'] and 'appendonly' in predicted['applied']
    assert server.client().config_get('appendonly')['appendonly'] == 'no'
    result = rpers.apply_settings(conn, settings)
    assert sorted(result['applied']) == ['appendonly', 'save'] and result['restart_required'] == []
    live = server.client().config_get('*')
    assert live['save'] == '900 1 300 10 60 10000' and live['appendonly'] == 'yes'
    assert rpers.apply_settings(conn, settings)['changed'] is False
    emptied = rpers.apply_settings(conn, {'save': []})
    assert emptied['applied'] == ['save'] and server.client().config_get('save')['save'] == ''
    moved = rpers.apply_settings(conn, {'dir': '/nonexistent'})
    assert moved['restart_required'] == ['dir'] and moved['applied'] == []
    assert moved['changed'] is False  # nothing was set live: the restart is the caller's
    server.settle()


@pytest.mark.parametrize('settings, named', [
    ({'save': 'often'}, 'save'),
    ({'appendfsync': 'sometimes'}, 'appendfsync'),
    ({'appendonly': 'maybe'}, 'appendonly'),
    ({'auto-aof-rewrite-percentage': -5}, 'auto-aof-rewrite-percentage'),
])
def test_bad_setting_values_are_refused_before_anything_is_set(redis_factory, settings, named):
    server = redis_factory(appendonly=False)
    conn = dict(login_port=server.port)
    before = server.client().config_get('*')
    for check_mode in (True, False):
        with pytest.raises(BackupError) as info:
            # a valid setting sorts first: nothing may be set before the bad one is found
            rpers.apply_settings(conn, dict({'aof-use-rdb-preamble': 'no'}, **settings),
                                 check_mode=check_mode)
        assert info.value.param == 'settings' and named in info.value.msg
    assert server.client().config_get('*') == before
    server.settle()


def test_a_failed_config_set_reports_what_was_already_set(redis_factory):
    server = redis_factory(appendonly=False)
    conn = dict(login_port=server.port)
    # dbfilename with a slash passes the value checks but Redis refuses it at CONFIG SET,
    # after appendfsync (sorted first) was already set live
    with pytest.raises(BackupError) as info:
        rpers.apply_settings(conn, {'appendfsync': 'always', 'dbfilename': 'a/b.rdb'})
    assert info.value.param == 'settings'
    assert info.value.details['changed'] is True
    assert info.value.details['applied'] == ['appendfsync']
    assert server.client().config_get('appendfsync')['appendfsync'] == 'always'
    server.settle()


# --------------------------------------------------------------------------- the modules


def test_module_check_mode_writes_nothing_then_real_run(redis_server, tmp_path):
    backup = tmp_path / 'b'
    metrics_dir = tmp_path / 'm'
    args = {'login_port': redis_server.port, 'backup_dir': str(backup),
            'metrics_dir': str(metrics_dir)}
    checked = run_module('codeb.backup.redis_snapshot', args, check=True)
    assert checked['changed'] is True and not checked.get('failed'), checked
    assert len(checked['would_write']) == 2
    assert not backup.exists() and not metrics_dir.exists()
    done = run_module('codeb.backup.redis_snapshot', args)
    assert done['changed'] is True and len(done['files']) == 2, done
    assert done['size_bytes'] > 0 and done['duration_seconds'] >= 0
    info = run_module('codeb.backup.redis_snapshot_info',
                      {'backup_dir': str(backup), 'verify': True}, check=True)
    assert info['changed'] is False and info['damaged'] == []
    assert info['current']['rdb'] == [s['file'] for s in info['snapshots'] if s['kind'] == 'rdb'][0]


def test_module_restore_check_mode_and_real(restorable, tmp_path):
    server = restorable(appendonly=True, password='pw-xyz')
    server.client().mset({'m%d' % i: i for i in range(50)})
    args = {'login_port': server.port, 'login_password': 'pw-xyz', 'backup_dir': str(tmp_path / 'b'),
            'metrics_dir': str(tmp_path / 'm')}
    assert run_module('codeb.backup.redis_snapshot', args)['changed'] is True
    server.client().flushall()
    restore = dict(args, state='restored', snapshot='latest', start_command=server.start_command)
    predicted = run_module('codeb.backup.redis_snapshot', restore, check=True)
    assert predicted['changed'] is True and predicted['expected_keys'] == 50, predicted
    assert server.client().dbsize() == 0, 'check mode must not restore'
    no_start = dict(restore)
    del no_start['start_command']
    refused = run_module('codeb.backup.redis_snapshot', no_start, check=True)
    assert refused['failed'] is True and refused['param'] == 'start_command', refused
    done = run_module('codeb.backup.redis_snapshot', restore)
    assert done['keys'] == 50 and server.client().dbsize() == 50, done
    assert 'pw-xyz' not in json.dumps(done)


@pytest.mark.parametrize('args, param', [
    ({'login_port': None}, 'login_host'),                           # nothing listens there
    ({'login_password': 'wrong'}, 'login_password'),
    ({'instance': '../../etc'}, 'instance'),
    ({'backup_dir': 'relative/dir'}, 'backup_dir'),
    ({'state': 'restored', 'snapshot': '../../etc/passwd', 'start_command': ['true']}, 'snapshot'),
    ({'state': 'restored', 'snapshot': 'dump-2000-01-01T00:00:00.rdb', 'start_command': ['true']},
     'snapshot'),
    ({'state': 'restored', 'snapshot': 'latest'}, 'start_command'),
])
def test_module_bad_input_names_the_parameter_and_writes_nothing(redis_factory, tmp_path, args,
                                                                 param):
    server = redis_factory(appendonly=True, password='right')
    backup = tmp_path / 'b'
    full = dict({'login_port': server.port, 'login_password': 'right',
                 'backup_dir': str(backup), 'metrics_dir': str(tmp_path / 'm')}, **args)
    if full['login_port'] is None:
        full['login_port'] = free_port()
    server.client().set('keep', 'me')
    result = run_module('codeb.backup.redis_snapshot', full)
    assert result.get('failed') is True, result
    assert result.get('param') == param, result
    assert not backup.exists()
    assert server.client().get('keep') == b'me'
    assert 'right' not in json.dumps(result.get('invocation', {}).get('module_args', {}).get(
        'login_password', ''))


def test_module_wrong_type_is_refused(redis_server, tmp_path):
    result = run_module('codeb.backup.redis_snapshot', {
        'login_port': 'not-a-port', 'backup_dir': str(tmp_path / 'b')})
    assert result.get('failed') is True and 'login_port' in result['msg']
    result = run_module('codeb.backup.redis_snapshot', {
        'login_port': redis_server.port, 'formats': ['rdb', 'json'],
        'backup_dir': str(tmp_path / 'b')})
    assert result.get('failed') is True and 'formats' in result['msg']
    assert not (tmp_path / 'b').exists()


def test_persistence_module_diff_and_idempotence(redis_factory):
    server = redis_factory(appendonly=False)
    args = {'login_port': server.port, 'settings': {'appendonly': True, 'save': []}}
    first = run_module('codeb.backup.redis_persistence', args, diff=True)
    assert first['changed'] is True and first['diff']['after']['appendonly'] == 'yes', first
    second = run_module('codeb.backup.redis_persistence', args)
    assert second['changed'] is False, second
    bad = run_module('codeb.backup.redis_persistence', {'login_port': server.port,
                                                        'settings': {'maxmemory': '1gb'}})
    assert bad['failed'] is True and bad['param'] == 'settings'
    server.settle()


def test_manifest_sha_matches_every_file(redis_server, tmp_path):
    backup = str(tmp_path / 'b')
    rsnap.take_snapshot(dict(login_port=redis_server.port), backup_dir=backup, metrics_dir='')
    for name, entry in Manifest(backup).load().items():
        with open(os.path.join(backup, name), 'rb') as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == entry['sha256']
        assert oct(os.stat(os.path.join(backup, name)).st_mode & 0o777) == '0o600'


def test_unix_socket_and_acl_user_through_the_cli(restorable, tmp_path):
    sock = os.path.join(str(tmp_path), 'r.sock')
    # a dedicated ACL user for backups (in the config, so it survives the restore's restart)
    server = restorable(appendonly=True, extra_config={
        'unixsocket': sock, 'unixsocketperm': '700', 'user': 'backup on >acl-pw ~* &* +@all'})
    admin = server.client()
    admin.mset({'s%d' % i: i for i in range(120)})
    env = {'REDISCLI_AUTH': 'acl-pw'}
    common = ['--socket', sock, '--user', 'backup', '--backup-dir', str(tmp_path / 'b'),
              '--metrics-dir', str(tmp_path / 'm')]
    proc = _cli('redis-snapshot', *common, env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert {s['kind'] for s in json.loads(out)['snapshots']} == {'rdb', 'aof'}

    wrong = _cli('redis-snapshot', *common, env={'REDISCLI_AUTH': 'nope'})
    out, err = wrong.communicate(timeout=60)
    assert wrong.returncode == 1 and json.loads(out)['param'] == 'login_password'

    admin.flushall()
    restore = _cli('redis-restore', *common, '--snapshot', 'latest', '--format', 'aof',
                   '--start-command', ' '.join(server.start_command), env=env)
    out, err = restore.communicate(timeout=120)
    assert restore.returncode == 0, err
    assert json.loads(out)['keys'] == 120
    import redis as redis_client
    assert redis_client.Redis(unix_socket_path=sock).dbsize() == 120


def test_unreachable_run_marks_failure_and_aof_off_clears_the_aof_job(redis_factory, tmp_path):
    metrics_dir = tmp_path / 'm'
    with pytest.raises(BackupError) as info:
        rsnap.take_snapshot(dict(login_port=free_port()), backup_dir=str(tmp_path / 'b'),
                            metrics_dir=str(metrics_dir))
    assert info.value.param == 'login_host' and not (tmp_path / 'b').exists()
    rdb_prom = metrics_dir / 'codeb_backup_redis_rdb_redis.prom'
    aof_prom = metrics_dir / 'codeb_backup_redis_aof_redis.prom'
    assert 'codeb_backup_last_status{kind="redis_rdb",target="redis"} 0' in rdb_prom.read_text()
    assert 'last_success_timestamp' not in rdb_prom.read_text()
    assert aof_prom.exists()
    server = redis_factory(appendonly=False)
    result = rsnap.take_snapshot(dict(login_port=server.port), backup_dir=str(tmp_path / 'b'),
                                 metrics_dir=str(metrics_dir))
    assert result['skipped'] == {'aof': 'appendonly is no on this instance'}
    assert 'codeb_backup_last_status{kind="redis_rdb",target="redis"} 1' in rdb_prom.read_text()
    assert not aof_prom.exists()


def test_aof_rewrite_setting_is_put_back_when_the_copy_fails(redis_factory, tmp_path):
    server = redis_factory(appendonly=True, extra_config={'auto-aof-rewrite-percentage': '77'})
    empty = tmp_path / 'not-the-data-dir'
    empty.mkdir()
    with pytest.raises(BackupError) as info:
        rsnap.take_snapshot(dict(login_port=server.port), backup_dir=str(tmp_path / 'b'),
                            formats=['aof'], data_dir=str(empty), metrics_dir='')
    assert 'AOF manifest' in info.value.msg
    live = server.client().config_get('auto-aof-rewrite-percentage')
    assert live['auto-aof-rewrite-percentage'] == '77'
    assert not [n for n in os.listdir(tmp_path / 'b') if not n.startswith('.')]


def test_early_copy_is_kept_only_when_info_confirms_that_one_save(redis_factory, tmp_path):
    """The copy started when a new dump.rdb appears is committed only if INFO then says
    exactly one save finished since the request and dump.rdb is still that file."""
    server = redis_factory(appendonly=False)
    client = server.client()
    client.set('a', 1)
    client.save()
    source = os.path.join(server.base, 'dump.rdb')
    backup = tmp_path / 'b'
    backup.mkdir()
    ok = {'rdb_saves': 1, 'rdb_last_bgsave_status': 'ok'}

    def new_save(value):
        client.set('a', value)
        client.save()  # renames a new file over dump.rdb, as a BGSAVE's child does

    for info, retried in (({'rdb_saves': 2, 'rdb_last_bgsave_status': 'ok'}, False),
                          (dict(ok, rdb_last_bgsave_status='err'), False), (ok, True)):
        final = str(backup / 'dump-2026-01-07T10:00:00.rdb')
        early = rrdb._EarlyCopy(source, final)
        early.arm()
        early.poll()
        assert early.source is None, 'nothing to copy before the file changes'
        new_save(2)
        early.poll()
        assert early.source is not None
        assert early.take(0, info, retried) is None
        early.discard()
        assert os.listdir(backup) == [], 'a refused early copy leaves nothing'

    # replaced again after the copy started: not the confirmed file -> refused
    early = rrdb._EarlyCopy(source, str(backup / 'x.rdb'))
    early.arm()
    new_save(3)
    early.poll()
    new_save(4)
    assert early.take(0, ok, False) is None
    early.discard()
    assert os.listdir(backup) == []

    early = rrdb._EarlyCopy(source, str(backup / 'y.rdb'))
    early.arm()
    new_save(5)
    early.poll()
    sha, size, keys, _expires = early.take(0, ok, False)
    early.discard()
    assert os.listdir(backup) == ['y.rdb']
    assert sha == _sha(str(backup / 'y.rdb')) == _sha(source) and keys == 1
    assert size == os.path.getsize(source)


def test_module_verified_marks_only_the_damaged_snapshot_and_latest_moves_on(restorable,
                                                                             tmp_path):
    """state=verified: evidence (a flipped byte) marks that snapshot failed_verification;
    the intact ones stay ok, latest and current.rdb move to the newest good one."""
    server = restorable(appendonly=True)
    server.client().mset({'k%d' % i: i for i in range(50)})
    backup = tmp_path / 'b'
    older = _snap(server, backup, formats=['rdb'])['snapshots'][0]
    newer = _snap(server, backup)['snapshots']
    newest_rdb = [e for e in newer if e['kind'] == 'rdb'][0]
    path = backup / newest_rdb['file']
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    args = {'state': 'verified', 'snapshot': 'all', 'backup_dir': str(backup),
            'metrics_dir': str(tmp_path / 'm')}
    checked = run_module('codeb.backup.redis_snapshot', args, check=True)
    assert checked.get('failed') and checked['param'] == 'snapshot', checked
    assert Manifest(str(backup)).load()[newest_rdb['file']]['status'] == 'ok', 'check mode'
    result = run_module('codeb.backup.redis_snapshot', args)
    assert result.get('failed') and newest_rdb['file'] in result['msg'], result
    statuses = {n: e['status'] for n, e in Manifest(str(backup)).load().items()}
    assert statuses.pop(newest_rdb['file']) == 'failed_verification'
    assert set(statuses.values()) == {'ok'} and len(statuses) == 2
    assert rstore.resolve_snapshot(str(backup), 'latest')['file'] == older['file']
    assert os.readlink(backup / 'current.rdb') == older['file']
    info = run_module('codeb.backup.redis_snapshot_info', {'backup_dir': str(backup)}, check=True)
    assert info['damaged'] == [newest_rdb['file']]
    assert 'codeb_backup_last_status{kind="redis_verify",target="redis"} 0' in (
        tmp_path / 'm' / 'codeb_backup_redis_verify_redis.prom').read_text()


def test_module_verified_reports_changed_exactly_when_it_rewrote_the_manifest(restorable,
                                                                              tmp_path):
    """state=verified writes the manifest only when a snapshot's status changes, and
    changed says so: good snapshots verified again are unchanged (manifest bytes identical),
    a damaged one is marked (changed), a repaired one is ok again (changed), then unchanged."""
    server = restorable(appendonly=False)
    server.client().mset({'k%d' % i: i for i in range(20)})
    backup = tmp_path / 'b'
    entry = _snap(server, backup, formats=['rdb'])['snapshots'][0]
    args = {'state': 'verified', 'snapshot': 'all', 'backup_dir': str(backup),
            'metrics_dir': str(tmp_path / 'm')}
    manifest = backup / 'manifest.json'
    before = manifest.read_bytes()
    first = run_module('codeb.backup.redis_snapshot', args)
    assert first['changed'] is False and first['verified'] is True, first
    assert manifest.read_bytes() == before
    path = backup / entry['file']
    good = path.read_bytes()
    data = bytearray(good)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    damaged = run_module('codeb.backup.redis_snapshot', args)
    assert damaged.get('failed') and damaged['changed'] is True, damaged
    assert Manifest(str(backup)).load()[entry['file']]['status'] == 'failed_verification'
    again = run_module('codeb.backup.redis_snapshot', args)
    assert again.get('failed') and again['changed'] is False, again
    path.write_bytes(good)
    repaired = run_module('codeb.backup.redis_snapshot', args)
    assert repaired['changed'] is True and not repaired.get('failed'), repaired
    assert Manifest(str(backup)).load()[entry['file']]['status'] == 'ok'
    settled = manifest.read_bytes()
    assert run_module('codeb.backup.redis_snapshot', args)['changed'] is False
    assert manifest.read_bytes() == settled
