"""Fault injection for redis_snapshot (RDB and AOF) through the host command, against real
redis-server 7 instances: killed at chosen or random points, out of space, read-only,
without its checking tool, with a hostile manifest. After every fault the next normal run
must leave only whole, listed, verifiable snapshots and Redis as it was configured."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import durable
from ansible_collections.codeb.backup.plugins.module_utils.redis import options as ropts
from ansible_collections.codeb.backup.plugins.module_utils.redis import connection as rconn
from ansible_collections.codeb.backup.plugins.module_utils.redis import scratch as rscratch
from ansible_collections.codeb.backup.plugins.module_utils.manifest import MANIFEST_NAME

from faults import harness

ALLOWED = {MANIFEST_NAME, '.%s.lock' % MANIFEST_NAME, ropts.LOCK_NAME, 'current.rdb', 'current.aof'}
PERCENTAGE = '77'  # not Redis's default, so "put back" cannot be confused with a reset
SCRATCH_PREFIX = 'codeb-redis-scratch-'  # the scratch servers' socket dirs in /tmp


def _argv(server, backup, metrics, *extra):
    return ['redis-snapshot', '--port', str(server.port), '--backup-dir', str(backup),
            '--metrics-dir', str(metrics), '--lock-timeout', '30', '--timeout', '60'] + list(extra)


def _server(redis_factory, keys=2000, value=60):
    server = redis_factory(appendonly=True, extra_config={
        'auto-aof-rewrite-percentage': PERCENTAGE, 'enable-debug-command': 'yes'})
    server.settle()
    client = server.client()
    client.execute_command('DEBUG', 'POPULATE', keys, 'k', value)
    client.bgrewriteaof()  # DEBUG is not propagated: put the keys into the AOF as well
    harness.wait_until(lambda: not int(client.info('persistence')['aof_rewrite_in_progress'])
                       and not int(client.info('persistence')['aof_rewrite_scheduled']), 60,
                       'the AOF rewrite')
    return server


def _percentage(server):
    return server.client().config_get('auto-aof-rewrite-percentage')['auto-aof-rewrite-percentage']


def _scratch_processes(backup):
    """pids of processes working in ``backup`` (a scratch redis-server's cwd is its data
    dir: the backup dir, which holds the AOF staging dir)."""
    found = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            cwd = os.readlink('/proc/%s/cwd' % pid)
            with open('/proc/%s/stat' % pid) as handle:
                state = handle.read().rsplit(')', 1)[1].split()[0]
        except OSError:
            continue
        cwd = cwd[:-len(' (deleted)')] if cwd.endswith(' (deleted)') else cwd
        if (cwd == str(backup) or cwd.startswith(str(backup) + '/')) and state != 'Z' \
                and int(pid) != os.getpid():
            found.append(int(pid))
    return found


def _scratch_dirs():
    tmp = os.path.realpath(tempfile.gettempdir())
    return {n for n in os.listdir(tmp) if n.startswith(SCRATCH_PREFIX)}


def assert_clean(backup, server=None):
    """Only whole, listed, verifiable snapshots; no temporaries, records or scratch servers;
    auto-aof-rewrite-percentage as configured."""
    names = set(os.listdir(backup))
    with open(os.path.join(backup, MANIFEST_NAME)) as handle:
        entries = json.load(handle)['entries']
    assert not [n for n in names if n.startswith(durable.TEMP_PREFIX)], names
    assert not names - ALLOWED - set(entries), 'unlisted files: %s' % (names - ALLOWED - set(entries))
    for name, entry in entries.items():
        path = os.path.join(backup, name)
        assert os.path.isfile(path), 'listed but missing: %s' % name
        assert entry['status'] == 'ok', entry
        assert os.path.getsize(path) == entry['size_bytes'], entry
        assert durable.sha256_file(path) == entry['sha256'], entry
    for kind, pointer in ropts.POINTERS.items():
        of_kind = sorted((e['time'], e['file']) for e in entries.values() if e['kind'] == kind)
        if of_kind:
            assert os.readlink(os.path.join(backup, pointer)) == of_kind[-1][1]
    harness.wait_until(lambda: not _scratch_processes(backup), 30, 'no scratch redis-server left')
    if server is not None:
        assert _percentage(server) == PERCENTAGE
    return entries


def _verify_all(backup):
    run = harness.run_ok(['redis-verify', '--backup-dir', str(backup), '--metrics-dir', ''])
    assert all(s['ok'] for s in run.result['snapshots']), run
    return run


def _success_time(metrics, kind):
    values = harness.read_metrics(harness.metrics_file(metrics, ropts.METRIC_KIND[kind], 'redis'))
    assert values['codeb_backup_last_status'] == 1, values
    return values['codeb_backup_last_success_timestamp_seconds']


def _age_rdb_entries(backup, hours, keep_newest=False):
    """Move the RDB entries' times back (setup for retention), as if taken hours ago;
    ``keep_newest`` leaves the newest as it is, so names stay in time order."""
    path = os.path.join(backup, MANIFEST_NAME)
    with open(path) as handle:
        data = json.load(handle)
    rdb = sorted((e for e in data['entries'].values() if e['kind'] == 'rdb'),
                 key=lambda e: e['time'])
    for entry in rdb[:-1] if keep_newest else rdb:
        when = datetime.datetime.strptime(entry['time'], '%Y-%m-%dT%H:%M:%S')
        entry['time'] = (when - datetime.timedelta(hours=hours)).strftime('%Y-%m-%dT%H:%M:%S')
    durable.atomic_write_json(path, data)


# --------------------------------------------------------------------------- kills

KILL_POINTS = ('rename', 'rename+', 'manifest', 'manifest+', 'unlink', 'unlink+', 'fsync', 'rmtree')


def test_killed_at_random_points_the_next_run_leaves_only_whole_listed_snapshots(
        redis_factory, tmp_path):
    rng = harness.rng('redis-kill')
    server = _server(redis_factory)
    backup, metrics = tmp_path / 'b', tmp_path / 'm'
    argv = _argv(server, backup, metrics, '--keep-min', '1', '--rdb-max-age-hours', '1',
                 '--aof-keep', '1')
    scratch_before = _scratch_dirs()
    harness.run_ok(argv)
    assert_clean(backup, server)
    killed, points = 0, []
    for trial in range(max(15, harness.TRIALS)):
        server.client().set('trial', trial)
        if trial % 4 == 3:
            _age_rdb_entries(backup, 2, keep_newest=True)  # give retention RDB snapshots to delete
        if trial % 3 == 2:
            run = harness.run_cli(argv, kill_after=rng.uniform(0.05, 1.2))
            points.append('after-delay')
        else:
            point = '%s:%d' % (rng.choice(KILL_POINTS), rng.randint(1, 9))
            run = harness.run_cli(argv, at=point)
            points.append(point)
        killed += run.killed
        assert run.killed or run.rc == 0, (points[-1], run)
        again = harness.run_ok(argv)
        try:
            entries = assert_clean(backup, server)
        except AssertionError as exc:
            raise AssertionError("after %s: %s\nkilled run: %r\nnext run: %s\nmanifest: %s" % (
                points[-1], exc, run, again.out[-3000:], open(os.path.join(backup, MANIFEST_NAME)).read()))
        assert {e['kind'] for e in entries.values()} == {'rdb', 'aof'}, points[-1]
        assert again.result['aof_rewrite_percentage'] == int(PERCENTAGE)
    assert killed >= max(15, harness.TRIALS) // 2, 'too few trials were killed: %s' % points
    _verify_all(backup)
    assert not _scratch_dirs() - scratch_before, 'scratch socket dirs left in /tmp'


def _poll_fast(predicate, timeout, what):
    """Like harness.wait_until, but without pausing between checks: the moments caught
    here (a scratch server alive, rewrites paused) last a fraction of a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
    raise AssertionError('timed out after %s s waiting for %s' % (timeout, what))


def _wait_then_kill_cli_only(argv, ready, what, env=None):
    """Run the host command; once ``ready()`` holds, SIGKILL the command alone (not the
    processes it started), as the OOM killer or a crash would."""
    proc = subprocess.Popen([sys.executable, harness.KILLER, '--'] + argv, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, **(env or {})),
                            start_new_session=True)
    try:
        _poll_fast(lambda: ready() or proc.poll() is not None, 120, what)
        assert proc.poll() is None, 'finished before %s: %s' % (what, proc.communicate())
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)


def test_killed_while_rewrites_are_paused_the_next_run_puts_the_original_back(
        redis_factory, tmp_path):
    """Defect 12: killed with auto-aof-rewrite-percentage 0, the next run read 0 as the
    original and kept automatic rewrites off for good."""
    server = _server(redis_factory, keys=20000, value=20)
    client = server.client()
    # a slow AOF rewrite in progress: the snapshot waits for it with rewrites paused
    client.config_set('rdb-key-save-delay', 100)
    client.bgrewriteaof()
    backup, metrics = tmp_path / 'b', tmp_path / 'm'
    argv = _argv(server, backup, metrics, '--formats', 'aof', '--no-verify-load')
    _wait_then_kill_cli_only(argv, lambda: _percentage(server) == '0',
                             'auto-aof-rewrite-percentage 0 during the copy')
    assert _percentage(server) == '0', 'the kill landed while rewrites were paused'
    client.config_set('rdb-key-save-delay', 0)
    run = harness.run_ok(argv)
    assert _percentage(server) == PERCENTAGE, 'automatic AOF rewrites were left off'
    assert run.result['aof_rewrite_percentage'] == int(PERCENTAGE)
    assert run.result['reconciled']['aof_rewrite'] == {'restored': PERCENTAGE}
    assert_clean(backup, server)
    assert not os.path.exists(os.path.join(backup, ropts.REWRITE_RECORD))


def test_killed_during_verify_load_leaves_no_scratch_server_running(redis_factory, tmp_path):
    """Defect 13: the scratch redis-server of a killed verify_load kept running (parent pid
    1, a copy of the dataset in memory) and its socket dir stayed."""
    server = _server(redis_factory, keys=300000, value=100)
    backup, metrics = tmp_path / 'b', tmp_path / 'm'
    argv = _argv(server, backup, metrics, '--formats', 'aof')
    before = _scratch_dirs()
    _wait_then_kill_cli_only(argv, lambda: bool(_scratch_processes(backup)),
                             'the scratch redis-server to start')
    harness.wait_until(lambda: not _scratch_processes(backup), 30,
                       'the scratch redis-server to die with the run')
    harness.run_ok(argv)
    assert_clean(backup, server)
    assert not _scratch_dirs() - before, 'the scratch socket dir was left in /tmp'


def test_a_leftover_scratch_server_is_stopped_by_pid_only_if_it_is_really_ours(tmp_path):
    """The record a killed run leaves names a pid; the next run kills it only if it is still
    that scratch redis-server (start time and socket in its command line)."""
    backup = tmp_path / 'b'
    backup.mkdir()
    sock_dir = os.path.join(os.path.realpath(tempfile.gettempdir()),
                            ropts.SCRATCH_PREFIX + 'faulttest%d' % os.getpid())
    os.mkdir(sock_dir)
    sock = os.path.join(sock_dir, 'redis.sock')
    scratch = subprocess.Popen(['redis-server', '--port', '0', '--unixsocket', sock, '--save', '',
                                '--dir', sock_dir], stdout=subprocess.DEVNULL)
    other = subprocess.Popen(['sleep', '300'])
    try:
        harness.wait_until(lambda: os.path.exists(sock), 30, 'the stand-in scratch server')
        # a record whose pid is now some other process: never killed
        durable.atomic_write_json(str(backup / ropts.SCRATCH_RECORD), dict(
            dir=sock_dir, socket=sock, pid=other.pid,
            start_time=rconn.proc_start_time(other.pid)))
        report = rscratch.stop_leftover_scratch(str(backup))
        assert report['stopped'] is False and other.poll() is None
        assert not os.path.exists(backup / ropts.SCRATCH_RECORD)
        # the real one: stopped, its dir removed
        os.mkdir(sock_dir) if not os.path.isdir(sock_dir) else None
        durable.atomic_write_json(str(backup / ropts.SCRATCH_RECORD), dict(
            dir=sock_dir, socket=sock, pid=scratch.pid,
            start_time=rconn.proc_start_time(scratch.pid)))
        report = rscratch.stop_leftover_scratch(str(backup))
        assert report['stopped'] is True
        assert scratch.wait(30) == -signal.SIGKILL
        assert not os.path.exists(sock_dir)
    finally:
        for proc in (scratch, other):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(sock_dir, ignore_errors=True)


# --------------------------------------------------------------------------- disk full

def _expect_failed_run(argv, metrics, before, since):
    """exit 1 and JSON; each kind that did not succeed: status 0, success time kept."""
    run = harness.run_failed(argv)
    done = {s['kind'] for s in run.result.get('snapshots', [])}
    for kind in ('rdb', 'aof'):
        if kind in done:
            assert _success_time(metrics, kind) >= since
        else:
            harness.assert_failure_recorded(metrics, ropts.METRIC_KIND[kind], 'redis',
                                            previous_success=before[kind], since=since)
    assert done != {'rdb', 'aof'}, 'the run was meant to run out of space: %s' % run
    return run


def test_disk_full_at_different_steps_fails_cleanly_and_the_next_run_recovers(
        redis_factory, tmp_path):
    server = _server(redis_factory, keys=3000, value=60)
    metrics = tmp_path / 'm'
    with harness.small_fs('8m') as fs:
        backup = os.path.join(fs, 'b')
        argv = _argv(server, backup, metrics, '--aof-keep', '1')
        first = harness.run_ok(argv)
        sizes = {s['kind']: s['size_bytes'] for s in first.result['snapshots']}
        rdb, aof = sizes['rdb'], sizes['aof']
        leaves = [0, 8192, rdb // 2, rdb + 16384, rdb + aof // 2, rdb + aof + aof // 3]
        stages = set()
        for leave in leaves:
            before = {k: _success_time(metrics, k) for k in ('rdb', 'aof')}
            filler = harness.fill(fs, leave)
            try:
                since = time.time()
                run = _expect_failed_run(argv, metrics, before, since)
                stages.add(tuple(sorted(s['kind'] for s in run.result.get('snapshots', []))))
                assert 'full' in run.result['msg'] or 'ENOSPC' in run.result['msg'], run
            finally:
                os.unlink(filler)
            harness.run_ok(argv)
            assert_clean(backup, server)
        assert len(stages) >= 2, 'the failures all fell at the same step: %s' % stages
    assert _success_time(metrics, 'rdb') and _success_time(metrics, 'aof')


def test_read_only_backup_dir_fails_cleanly_and_the_next_run_recovers(redis_factory, tmp_path):
    server = _server(redis_factory)
    metrics = tmp_path / 'm'
    with harness.small_fs('8m') as fs:
        backup = os.path.join(fs, 'b')
        argv = _argv(server, backup, metrics)
        harness.run_ok(argv)
        before = {k: _success_time(metrics, k) for k in ('rdb', 'aof')}
        harness.remount(fs, 'ro')
        try:
            since = time.time()
            run = _expect_failed_run(argv, metrics, before, since)
            assert 'read-only' in run.result['msg'], run
            assert _percentage(server) == PERCENTAGE
        finally:
            harness.remount(fs, 'rw')
        harness.run_ok(argv)
        assert_clean(backup, server)


@pytest.mark.parametrize('fault', ['read-only', 'full'])
def test_metrics_dir_unwritable_fails_the_run_but_keeps_the_snapshots(redis_factory, tmp_path,
                                                                      fault):
    server = _server(redis_factory)
    backup = tmp_path / 'b'
    with harness.small_fs('1m') as fs:
        metrics = os.path.join(fs, 'm')
        argv = _argv(server, backup, metrics)
        harness.run_ok(argv)
        filler = None
        if fault == 'read-only':
            harness.remount(fs, 'ro')
        else:
            filler = harness.fill(fs, 0)
        try:
            run = harness.run_failed(argv)
            assert run.result.get('param') == 'metrics_dir', run
            assert 'metrics' in run.result['msg'], run
        finally:
            if fault == 'read-only':
                harness.remount(fs, 'rw')
            else:
                os.unlink(filler)
        entries = assert_clean(backup, server)
        assert len([e for e in entries.values() if e['kind'] == 'rdb']) == 2, 'the snapshot is kept'
        harness.run_ok(argv)
        assert _success_time(metrics, 'rdb') and _success_time(metrics, 'aof')


# --------------------------------------------------------------------------- checking tool

def test_without_the_checking_tool_nothing_is_condemned_and_prune_keeps_everything(
        redis_factory, tmp_path):
    server = _server(redis_factory)
    backup, metrics = tmp_path / 'b', tmp_path / 'm'
    argv = _argv(server, backup, metrics, '--formats', 'rdb', '--keep-min', '4')
    for _round in range(3):
        harness.run_ok(argv + ['--no-prune'])
    _age_rdb_entries(backup, 48)  # older than rdb_max_age_hours: only keep_min protects them
    manifest_path = os.path.join(backup, MANIFEST_NAME)
    before = open(manifest_path, 'rb').read()
    hidden = dict(PATH='/nonexistent-codeb-fault')  # no redis-check-rdb / redis-check-aof

    run = harness.run_failed(['redis-verify', '--backup-dir', str(backup), '--metrics-dir',
                              str(metrics)], env=hidden)
    assert 'redis-check-rdb' in run.result['msg'] and 'not installed' in run.result['msg'], run
    harness.assert_failure_recorded(metrics, 'redis_verify', 'redis')
    run = harness.run_failed(['redis-restore', '--port', str(server.port), '--backup-dir',
                              str(backup), '--metrics-dir', str(metrics), '--start-command',
                              'true'], env=hidden)
    assert 'redis-check-rdb' in run.result['msg'], run
    assert open(manifest_path, 'rb').read() == before, 'no status changed'
    assert server.client().dbsize() == 2000, 'Redis untouched'

    harness.run_failed(argv, env=hidden)  # a snapshot cannot be checked either
    harness.run_ok(argv)  # tools back: prune runs with keep_min 4
    entries = assert_clean(backup, server)
    assert len(entries) == 4, 'the three intact old snapshots were kept'
    assert _verify_all(backup).result['changed'] is False


# --------------------------------------------------------------------------- hostile manifest

HOSTILE = [
    ('traversal', lambda e: dict(e, file='../canary.rdb'), '../canary.rdb'),
    ('absolute', lambda e: dict(e, file='/tmp/canary.rdb'), '/tmp/canary.rdb'),
    ('sha256 not a string', lambda e: dict(e, sha256=12345), None),
    ('size not an int', lambda e: dict(e, size_bytes='big'), None),
    ('time not a timestamp', lambda e: dict(e, time='yesterday'), None),
    ('unknown kind', lambda e: dict(e, kind='exe'), None),
    ('unknown status', lambda e: dict(e, status='whatever'), None),
]


@pytest.mark.parametrize('label,change,key', HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_manifest_is_refused_naming_it_and_nothing_outside_is_touched(
        redis_factory, tmp_path, label, change, key):
    server = _server(redis_factory, keys=200)
    backup, metrics = tmp_path / 'b', tmp_path / 'm'
    argv = _argv(server, backup, metrics, '--formats', 'rdb')
    harness.run_ok(argv)
    canary = tmp_path / 'canary.rdb'
    shutil.copyfile(os.path.join(backup, os.readlink(backup / 'current.rdb')), canary)
    canary_sha = durable.sha256_file(str(canary))
    manifest_path = os.path.join(backup, MANIFEST_NAME)
    with open(manifest_path) as handle:
        data = json.load(handle)
    name, entry = next(iter(data['entries'].items()))
    bad = change(entry)
    data['entries'][key or name] = bad
    if key:
        bad['time'] = '2020-01-01T00:00:00'  # oldest: the first retention would delete
    durable.atomic_write_json(manifest_path, data)
    before = open(manifest_path, 'rb').read()
    listing = set(os.listdir(backup))

    for command in (argv + ['--keep-min', '1', '--rdb-max-age-hours', '1'],
                    ['redis-restore', '--port', str(server.port), '--backup-dir', str(backup),
                     '--metrics-dir', str(metrics), '--start-command', 'true',
                     '--snapshot', name],
                    ['redis-verify', '--backup-dir', str(backup), '--metrics-dir', str(metrics)],
                    ['redis-list', '--backup-dir', str(backup), '--verify'],
                    ['redis-ship', '--backup-dir', str(backup), '--metrics-dir', str(metrics),
                     '--ship-dir', str(tmp_path / 'shipped')]):
        run = harness.run_failed(command)
        assert manifest_path in run.result['msg'] and run.result.get('param') == 'manifest', (
            label, command[0], run)
    assert canary.exists() and durable.sha256_file(str(canary)) == canary_sha
    assert open(manifest_path, 'rb').read() == before
    assert set(os.listdir(backup)) == listing
    assert server.client().dbsize() == 200
