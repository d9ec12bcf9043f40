"""pg_snapshot under the worst night: killed at random moments, a full or read-only disk,
a missing tool, hostile manifests, a restore killed while the live database is closed.

Every case runs the host command exactly as cron does (tests/faults/killer.py) against the
real throwaway PostgreSQL 15 cluster, then checks the directory, the manifest, the metrics
file and the JSON result.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil

import pytest

from faults import harness
from faults.harness import assert_failure_recorded, read_metrics, run_cli, run_failed, run_ok

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.postgres import (
    connection, options, snapshot, store)

DB = 'fault_db'
ROWS = 3000
SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, body text);
INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, %d) g;
CREATE TABLE notes (id int, note text);
INSERT INTO notes SELECT g, repeat('n', 50) FROM generate_series(1, 200) g;
""" % ROWS


@pytest.fixture
def db(pg_cluster):
    pg_cluster.create_database(DB)
    pg_cluster.psql(SCHEMA, DB)
    yield pg_cluster
    pg_cluster.psql('ALTER DATABASE %s ALLOW_CONNECTIONS true' % DB, check=False)


def argv(pg_cluster, backup_dir, metrics_dir, *extra, database=DB):
    return ['pg-snapshot', '--database', database, '--backup-dir', str(backup_dir),
            '--login-unix-socket', pg_cluster.socket_dir, '--login-port', str(pg_cluster.port),
            '--metrics-dir', str(metrics_dir), '--lock-timeout', '5'] + list(extra)


def assert_whole(backup_dir, database=DB):
    """Only whole, listed, verifiable snapshots: every snapshot file is in the manifest,
    every entry's file exists with its sha256, no temporary and no unfinished prune."""
    names = sorted(os.listdir(backup_dir))
    assert not [n for n in names if n.startswith('.tmp-')], names
    entries = Manifest(str(backup_dir)).load()
    files = [n for n in names if n.startswith(database + '-')]
    assert sorted(files) == sorted(n for n, e in entries.items()
                                   if e.get('database') == database), (files, sorted(entries))
    for name, entry in entries.items():
        assert entry['status'] == 'ok', entry
        assert store.artifact_sha256(os.path.join(str(backup_dir), name)) == entry['sha256'], name
    return entries


def seed_old(backup_dir, source_name, days):
    """Copies of a real snapshot under older timestamps, listed in the manifest."""
    source = os.path.join(str(backup_dir), source_name)
    entry = Manifest(str(backup_dir)).load()[source_name]
    now = datetime.datetime.now(datetime.timezone.utc)
    made = []
    with Manifest(str(backup_dir)).update() as entries:
        for age in days:
            stamp = (now - datetime.timedelta(days=age)).strftime('%Y-%m-%dT%H:%M:%S')
            name = store.snapshot_name(DB, stamp, 'zstd')
            shutil.copyfile(source, os.path.join(str(backup_dir), name))
            entries[name] = dict(entry, file=name, time=stamp)
            made.append(name)
    return made


# --------------------------------------------------------------------------- random kills

def test_random_kills_leave_only_whole_listed_snapshots(db, tmp_path):
    """Seeded kills, aimed at the commit rename, the manifest write and the prune's
    unlinks, and at random delays; each followed by a normal run that must reconcile."""
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    args = argv(db, backup, metrics_dir)
    first = run_ok(args)
    rng = harness.rng('pg_snapshot_kills')
    aimed = ['rename:1', 'rename+:1', 'manifest:1', 'manifest+:1', 'manifest:2', 'unlink:1',
             'unlink:2', 'fsync:1', 'spawn=pg_dump:1', 'spawn=pg_restore+:1']
    trials = max(harness.TRIALS, len(aimed) + 5)
    outcomes = []
    for trial in range(trials):
        # old snapshots, so the run's prune has something to delete (and can be killed at)
        seed_old(backup, first.result['file'], [20 + trial, 21 + trial])
        if trial < len(aimed):
            killed = run_cli(args, at=aimed[trial])
        else:
            killed = run_cli(args, kill_after=rng.uniform(0.05, 1.5))
        outcomes.append(killed.killed)
        again = run_ok(args)
        assert again.result['file'] in assert_whole(backup), again
        listing = run_ok(['pg-snapshot-list', '--database', DB, '--backup-dir', str(backup)])
        assert all(s['status'] == 'ok' and s['exists'] for s in listing.result['snapshots'])
    assert sum(outcomes) >= len(aimed), 'the aimed kill points must all have been reached'
    values = read_metrics(harness.metrics_file(metrics_dir, options.KIND, DB))
    assert values['codeb_backup_last_status'] == 1


def test_kill_between_rename_and_manifest_is_adopted_and_restorable(db, tmp_path):
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    killed = run_cli(argv(db, backup, metrics_dir), at='rename+:1')
    assert killed.killed and 'KILL-POINT rename:1+' in killed.err
    unlisted = [n for n in os.listdir(backup) if n.startswith(DB + '-')]
    assert len(unlisted) == 1 and unlisted[0] not in Manifest(str(backup)).load()
    result = run_ok(argv(db, backup, metrics_dir, '--state', 'pruned')).result
    assert result['reconciled']['adopted'] == unlisted
    entry = Manifest(str(backup)).load()[unlisted[0]]
    assert entry['adopted'] is True and entry['status'] == 'ok'
    restored = run_ok(argv(db, backup, metrics_dir, '--state', 'restored', '--snapshot',
                           unlisted[0], '--target-database', 'fault_adopted')).result
    assert restored['row_check'].startswith('skipped')
    assert db.psql('SELECT count(*) FROM items', 'fault_adopted') == str(ROWS)
    db.psql('DROP DATABASE fault_adopted')


def test_unlisted_damaged_snapshot_is_removed_not_adopted(db, tmp_path):
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    os.makedirs(backup)
    junk = backup / ('%s-2026-01-01T00:00:00.dump.zst' % DB)
    junk.write_bytes(b'not an archive')
    result = run_ok(argv(db, backup, metrics_dir)).result
    assert [r['file'] for r in result['reconciled']['removed']] == [junk.name]
    assert not junk.exists()
    assert_whole(backup)


def test_old_interrupted_prune_leftovers_are_adopted_then_pruned(db, tmp_path):
    """What a killed prune of an earlier version left: entries gone, files still there."""
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    first = run_ok(argv(db, backup, metrics_dir)).result
    old = seed_old(backup, first['file'], [30, 31, 32])
    with Manifest(str(backup)).update() as entries:
        for name in old:
            del entries[name]
    result = run_ok(argv(db, backup, metrics_dir, '--state', 'pruned', '--keep-min', '1')).result
    assert sorted(result['reconciled']['adopted']) == sorted(old)
    assert sorted(p['file'] for p in result['pruned']) == sorted(old)
    assert not [n for n in os.listdir(backup) if n in old]
    assert_whole(backup)


def test_prune_killed_after_marking_is_finished_by_the_next_run(db, tmp_path):
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    first = run_ok(argv(db, backup, metrics_dir)).result
    old = seed_old(backup, first['file'], [30, 31])
    killed = run_cli(argv(db, backup, metrics_dir, '--state', 'pruned', '--keep-min', '1'),
                     at='unlink:1')
    assert killed.killed
    entries = Manifest(str(backup)).load()
    assert all(entries[n]['status'] == store.DELETING for n in old)
    listing = run_ok(['pg-snapshot-list', '--database', DB, '--backup-dir', str(backup)]).result
    assert [s['file'] for s in listing['snapshots'] if s['verified']] == [first['file']]
    result = run_ok(argv(db, backup, metrics_dir, '--state', 'verified')).result
    assert result['verified'] is True
    assert sorted(Manifest(str(backup)).load()) == [first['file']]
    assert_whole(backup)


# --------------------------------------------------------------------------- disks

@pytest.mark.parametrize('leave', [0, 8 * 1024, 'half', 'almost', 'all-but-manifest'])
def test_full_disk_fails_cleanly_and_records_the_failure(db, tmp_path, leave):
    metrics_dir = tmp_path / 'm'
    with harness.small_fs('2m') as fs:
        backup = os.path.join(fs, 'b')
        ok = run_ok(argv(db, backup, metrics_dir)).result
        success = read_metrics(harness.metrics_file(metrics_dir, options.KIND, DB))[
            'codeb_backup_last_success_timestamp_seconds']
        at_manifest = leave == 'all-but-manifest'
        pages = -(-ok['size_bytes'] // 4096) * 4096
        leave = {'half': pages // 2, 'almost': pages - 4096,
                 'all-but-manifest': pages}.get(leave, leave)  # the dump fits, nothing more
        filler = harness.fill(fs, leave)
        failed = run_failed(argv(db, backup, metrics_dir))
        if at_manifest:
            assert 'filesystem is full' in failed.result['msg'], failed
        assert_failure_recorded(metrics_dir, options.KIND, DB, previous_success=success)
        assert 'Traceback' not in failed.err
        entries = Manifest(backup).load()
        assert sorted(entries) == [ok['file']]
        os.unlink(filler)
        again = run_ok(argv(db, backup, metrics_dir)).result
        assert_whole(backup)
        assert again['file'] != ok['file']


def test_read_only_backup_dir_fails_cleanly(db, tmp_path):
    metrics_dir = tmp_path / 'm'
    with harness.small_fs('4m') as fs:
        backup = os.path.join(fs, 'b')
        first = run_ok(argv(db, backup, metrics_dir)).result
        success = read_metrics(harness.metrics_file(metrics_dir, options.KIND, DB))[
            'codeb_backup_last_success_timestamp_seconds']
        harness.remount(fs, 'ro')
        try:
            failed = run_failed(argv(db, backup, metrics_dir))
            assert 'read-only' in failed.result['msg'], failed
            assert_failure_recorded(metrics_dir, options.KIND, DB, previous_success=success)
            verify = run_failed(argv(db, backup, metrics_dir, '--state', 'verified'))
            assert 'read-only' in verify.result['msg']
        finally:
            harness.remount(fs, 'rw')
        assert sorted(Manifest(backup).load()) == [first['file']]
        run_ok(argv(db, backup, metrics_dir))
        assert_whole(backup)


def test_metrics_write_failure_never_masks_the_job(db, tmp_path):
    backup = tmp_path / 'b'
    with harness.small_fs('1m') as metrics_fs:
        harness.remount(metrics_fs, 'ro')
        try:
            # the job succeeds, its metrics cannot be written: a failed run that says the
            # snapshot is kept
            ok = run_failed(argv(db, backup, metrics_fs))
            assert ok.result['param'] == 'metrics_dir'
            assert 'artifact is kept' in ok.result['msg']
            assert len(assert_whole(backup)) == 1
            # the job fails for its own reason: that reason is reported, not the metrics one
            bad = run_failed(argv(db, backup, metrics_fs, '--login-port', '1'))
            assert bad.result['param'] == 'login_port', bad
            assert 'metrics_error' in bad.result
        finally:
            harness.remount(metrics_fs, 'rw')


# --------------------------------------------------------------------------- tools, manifests

def test_missing_pg_restore_condemns_nothing(db, tmp_path):
    """A major upgrade moves pg_restore: verification fails the run, not the snapshots."""
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    for _snapshot in range(3):
        run_ok(argv(db, backup, metrics_dir))
    seed_old(backup, sorted(Manifest(str(backup)).load())[0], [20, 21])
    before = Manifest(str(backup)).load()
    partial = tmp_path / 'bin'
    partial.mkdir()
    for tool in ('psql', 'pg_dump'):
        os.symlink(os.path.join(connection.DEFAULT_PG_BIN_DIR, tool), partial / tool)
    failed = run_failed(argv(db, backup, metrics_dir, '--state', 'verified', '--snapshot', 'all',
                             '--pg-bin-dir', str(partial)))
    assert failed.result['param'] == 'pg_bin_dir' and 'pg_restore' in failed.result['msg']
    assert_failure_recorded(metrics_dir, options.KIND_VERIFY, DB)
    assert Manifest(str(backup)).load() == before, 'no status may change without evidence'
    pruned = run_ok(argv(db, backup, metrics_dir, '--state', 'pruned')).result
    assert len(pruned['kept']) == 3
    run_ok(argv(db, backup, metrics_dir, '--state', 'restored', '--target-database',
                'fault_after_upgrade'))
    db.psql('DROP DATABASE fault_after_upgrade')


def test_missing_zstd_is_not_evidence(db, tmp_path):
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    run_ok(argv(db, backup, metrics_dir))
    before = Manifest(str(backup)).load()
    failed = run_failed(argv(db, backup, metrics_dir, '--state', 'verified'),
                        env={'PATH': '/nonexistent'})
    assert 'zstd' in failed.result['msg']
    assert Manifest(str(backup)).load() == before


@pytest.mark.parametrize('hostile', [
    {'../canary.dump': {'file': '../canary.dump', 'time': '2020-01-01T00:00:00'}},
    {'x': {'file': '/etc/passwd', 'time': '2020-01-01T00:00:00'}},
    {'.hidden': {'file': '.hidden', 'time': '2020-01-01T00:00:00'}},
    {'ok-2020-01-01T00:00:00.dump': ['not', 'a', 'dict']},
])
def test_hostile_manifest_is_refused_and_nothing_outside_is_touched(db, tmp_path, hostile):
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    run_ok(argv(db, backup, metrics_dir))
    canary = tmp_path / 'canary.dump'
    canary.write_bytes(b'precious')
    path = backup / 'manifest.json'
    data = json.loads(path.read_text())
    for key, value in hostile.items():
        if isinstance(value, dict):
            value = dict(value, kind=options.KIND, database=DB, sha256='0' * 64, status='ok')
        data['entries'][key] = value
    path.write_text(json.dumps(data))
    before = sorted(os.listdir(backup))
    for state in ('pruned', 'present', 'verified', 'restored'):
        failed = run_failed(argv(db, backup, metrics_dir, '--state', state, '--keep-days', '0',
                                 '--keep-min', '1'))
        assert failed.result['param'] == 'manifest' and 'manifest' in failed.result['msg'], failed
    assert canary.read_bytes() == b'precious'
    assert sorted(os.listdir(backup)) == before


def test_prune_rechecks_the_newest_before_deleting_older(db, tmp_path):
    """A byte flipped in the newest snapshot: prune must not count it among keep_min."""
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    first = run_ok(argv(db, backup, metrics_dir)).result
    old = seed_old(backup, first['file'], [10, 9, 8])
    newest = backup / first['file']
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    result = run_ok(argv(db, backup, metrics_dir, '--state', 'pruned', '--keep-days', '7',
                         '--keep-min', '3')).result
    assert [c['file'] for c in result['failed_verification']] == [first['file']]
    assert result['pruned'] == []
    good = [n for n, e in Manifest(str(backup)).load().items() if e['status'] == 'ok']
    assert sorted(good) == sorted(old), 'three intact snapshots must remain'


# --------------------------------------------------------------------------- restore safety

@pytest.mark.parametrize('target,allow,param', [
    ('template1', False, 'target_database'), ('template0', False, 'target_database'),
    ('template1', True, 'target_database'), ('postgres', False, 'target_database'),
    ('postgres', True, 'maintenance_db'),
])
def test_restore_into_system_database_refused_before_anything_changes(db, tmp_path, target,
                                                                      allow, param):
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    run_ok(argv(db, backup, metrics_dir))
    before_tables = db.psql("SELECT count(*) FROM pg_class WHERE relname = 'items'", 'template1')
    extra = ['--allow-postgres-database'] if allow else []
    failed = run_failed(argv(db, backup, metrics_dir, '--state', 'restored',
                             '--target-database', target, *extra))
    assert failed.result['param'] == param, failed
    assert db.psql("SELECT count(*) FROM pg_class WHERE relname = 'items'", 'template1') == \
        before_tables == '0'
    assert db.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '_codeb_%'") == '0'


def test_postgres_restore_allowed_through_another_maintenance_db(db, tmp_path):
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    scratch = 'fault_maint_src'
    db.create_database(scratch)
    db.psql('CREATE TABLE marker (x int); INSERT INTO marker VALUES (1)', scratch)
    run_ok(argv(db, backup, metrics_dir, database=scratch))
    db.psql('ALTER DATABASE postgres RENAME TO postgres_orig', 'template1')
    try:
        db.psql('CREATE DATABASE postgres', 'template1')
        run_ok(argv(db, backup, metrics_dir, '--state', 'restored', '--target-database',
                    'postgres', '--allow-postgres-database', '--maintenance-db', 'template1',
                    database=scratch))
        assert db.psql('SELECT x FROM marker', 'postgres') == '1'
    finally:
        db.psql('DROP DATABASE IF EXISTS postgres WITH (FORCE)', 'template1')
        db.psql('ALTER DATABASE postgres_orig RENAME TO postgres', 'template1')
        db.psql('DROP DATABASE %s' % scratch)


def test_failure_after_the_swap_puts_the_original_back(db, tmp_path, monkeypatch):
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    run_ok(argv(db, backup, metrics_dir))
    db.psql('INSERT INTO items VALUES (-1, %s)' % "'live edit'", DB)
    real = connection.Connection.psql

    def psql(self, sql, database, what='psql'):
        if sql.startswith('DROP DATABASE "_codeb_old_'):
            raise BackupError('injected: dropping the replaced database failed')
        return real(self, sql, database, what)
    monkeypatch.setattr(connection.Connection, 'psql', psql)
    params = dict(state='restored', database=DB, backup_dir=str(backup),
                  login_unix_socket=db.socket_dir, login_port=db.port,
                  metrics_dir=str(metrics_dir))
    with pytest.raises(BackupError) as caught:
        snapshot.run_state(params)
    assert 'put back' in caught.value.msg
    assert db.psql("SELECT body FROM items WHERE id = -1", DB) == 'live edit'
    assert db.psql("SELECT datallowconn FROM pg_database WHERE datname = '%s'" % DB) == 't'
    assert not os.path.exists(store.restore_marker_path(str(backup), DB))
    # the restored copy was dropped again; nothing is left behind
    assert db.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '_codeb_%'") == '0'
    assert_failure_recorded(metrics_dir, options.KIND_RESTORE, DB)
    monkeypatch.undo()
    run_ok(argv(db, backup, metrics_dir, '--state', 'restored'))
    assert db.psql("SELECT count(*) FROM items WHERE id = -1", DB) == '0'


def test_restore_killed_while_closed_is_reopened_by_the_next_run(db, tmp_path):
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    run_ok(argv(db, backup, metrics_dir))
    killed = run_cli(argv(db, backup, metrics_dir, '--state', 'restored'),
                     at='spawn=ALLOW_CONNECTIONS false+:1')
    assert killed.killed, killed
    assert db.psql("SELECT datallowconn FROM pg_database WHERE datname = '%s'" % DB) == 'f'
    assert os.path.exists(store.restore_marker_path(str(backup), DB))
    # the nightly snapshot is the next job: it reopens the database, then snapshots it
    again = run_ok(argv(db, backup, metrics_dir)).result
    assert again['reconciled']['reopened'] is True
    assert db.psql("SELECT datallowconn FROM pg_database WHERE datname = '%s'" % DB) == 't'
    assert not os.path.exists(store.restore_marker_path(str(backup), DB))
    # and the killed restore's temporary database is gone too, not left for a later restore
    assert again['reconciled']['leftover_databases_dropped']
    assert db.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '_codeb_%'") == '0'


def test_restore_killed_during_pg_restore_leaves_no_database_behind(db, tmp_path):
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    run_ok(argv(db, backup, metrics_dir))
    killed = run_cli(argv(db, backup, metrics_dir, '--state', 'restored'),
                     at='spawn=--exit-on-error:1')  # the pg_restore that fills it
    assert killed.killed, killed
    assert db.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '_codeb_%'") == '1'
    result = run_ok(argv(db, backup, metrics_dir, '--state', 'pruned')).result
    assert len(result['reconciled']['leftover_databases_dropped']) == 1
    assert db.psql("SELECT count(*) FROM pg_database WHERE datname LIKE '_codeb_%'") == '0'
    assert db.psql("SELECT datallowconn FROM pg_database WHERE datname = '%s'" % DB) == 't'


def test_closed_database_without_marker_names_the_fix(db, tmp_path):
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    db.psql('ALTER DATABASE %s ALLOW_CONNECTIONS false' % DB)
    failed = run_failed(argv(db, backup, metrics_dir))
    assert failed.result['param'] == 'database'
    assert 'ALLOW_CONNECTIONS true' in failed.result['msg']
    assert_failure_recorded(metrics_dir, options.KIND, DB)


def test_safety_snapshots_have_their_own_metrics(db, tmp_path):
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    failed = run_failed(argv(db, backup, metrics_dir, '--login-port', '1'))
    assert failed.result['param'] == 'login_port'
    scheduled = harness.metrics_file(metrics_dir, options.KIND, DB)
    before = open(scheduled).read()
    made = run_ok(argv(db, backup, metrics_dir, '--purpose', 'safety')).result
    assert made['purpose'] == 'safety'
    assert open(scheduled).read() == before, 'a safety snapshot must not mask the failure'
    safety = read_metrics(harness.metrics_file(metrics_dir, 'pg_snapshot_safety', DB))
    assert safety['codeb_backup_last_status'] == 1
    assert Manifest(str(backup)).load()[made['file']]['purpose'] == 'safety'


def test_sha256_of_copy_is_what_the_manifest_says(db, tmp_path):
    """The invariant checker itself can fail: a flipped byte is caught by assert_whole."""
    backup, metrics_dir = tmp_path / 'b', tmp_path / 'm'
    made = run_ok(argv(db, backup, metrics_dir)).result
    path = backup / made['file']
    path.write_bytes(path.read_bytes() + b'x')
    with pytest.raises(AssertionError):
        assert_whole(backup)
    assert hashlib.sha256(path.read_bytes()).hexdigest() != made['sha256']
