"""Unit tests of the shared core: naming, durable writes, locks, manifest, retention, metrics."""

from __future__ import annotations

import datetime
import multiprocessing
import os
import signal
import time

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import durable, metrics
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError, LockTimeout
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.naming import (
    format_timestamp, parse_timestamp, unique_timestamp, validate_name)
from ansible_collections.codeb.backup.plugins.module_utils.retention import plan_retention

UTC = datetime.timezone.utc


@pytest.mark.parametrize('good', ['worb', 'da_rak', 'My-DB', 'v1.2.3', 'a' * 63, '0day'])
def test_validate_name_accepts(good):
    assert validate_name('database', good) == good


@pytest.mark.parametrize('bad', ['', '.', '..', '../etc', 'a/b', '/abs', '-rf', '.hidden',
                                 'a' * 64, 'sp ace', 'nul\x00', None, 5])
def test_validate_name_refuses_and_names_param(bad):
    with pytest.raises(BackupError) as info:
        validate_name('project', bad)
    assert info.value.param == 'project'
    assert 'project' in info.value.msg


def test_timestamps_round_trip_and_unique():
    moment = datetime.datetime(2026, 1, 7, 10, 30, 0, tzinfo=UTC)
    assert format_timestamp(moment) == '2026-01-07T10:30:00'
    assert parse_timestamp('version', '2026-01-07T10:30:00') == moment
    assert unique_timestamp({'2026-01-07T10:30:00'}, moment) == '2026-01-07T10:30:01'
    for bad in ['2026-01-07 10:30:00', '2026-13-07T10:30:00', 'latest', '']:
        with pytest.raises(BackupError) as info:
            parse_timestamp('version', bad)
        assert info.value.param == 'version'


def test_atomic_path_commits_only_on_success(tmp_path):
    final = tmp_path / 'a.dump'
    with pytest.raises(RuntimeError):
        with durable.atomic_path(str(final)) as temp:
            with open(temp, 'w') as handle:
                handle.write('half')
            raise RuntimeError('tool died')
    assert os.listdir(tmp_path) == []
    with durable.atomic_path(str(final)) as temp:
        with open(temp, 'w') as handle:
            handle.write('whole')
    assert final.read_text() == 'whole'
    assert oct(final.stat().st_mode & 0o777) == oct(0o600)
    assert os.listdir(tmp_path) == ['a.dump']


def _write_forever(final):
    with durable.atomic_path(final) as temp:
        with open(temp, 'wb') as handle:
            while True:
                handle.write(b'x' * 65536)
                handle.flush()


def test_killed_writer_leaves_no_final_file_and_temps_are_cleaned(tmp_path):
    final = str(tmp_path / 'big.rdb')
    proc = multiprocessing.get_context('fork').Process(target=_write_forever, args=(final,))
    proc.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            n.startswith(durable.TEMP_PREFIX) and os.path.getsize(tmp_path / n) > 0
            for n in os.listdir(tmp_path)):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    names = os.listdir(tmp_path)
    assert 'big.rdb' not in names
    assert names and all(n.startswith(durable.TEMP_PREFIX) for n in names)
    assert durable.remove_stale_temps(str(tmp_path)) == names
    assert os.listdir(tmp_path) == []


def test_durable_copy_hashes_what_it_wrote(tmp_path):
    src = tmp_path / 'src'
    src.write_bytes(os.urandom(3 * durable.CHUNK + 17))
    digest, size = durable.durable_copy(str(src), str(tmp_path / 'dst'))
    assert size == src.stat().st_size
    assert digest == durable.sha256_file(str(src)) == durable.sha256_file(str(tmp_path / 'dst'))


def _hold_lock(path, ready, seconds):
    with job_lock(path, 'test job'):
        ready.set()
        time.sleep(seconds)


def test_second_lock_waits_then_fails_with_holder(tmp_path):
    path = str(tmp_path / 'job.lock')
    ctx = multiprocessing.get_context('fork')
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(path, ready, 5))
    holder.start()
    assert ready.wait(10)
    with pytest.raises(LockTimeout) as info:
        with job_lock(path, 'pg_snapshot of database worb', wait=0.3):
            pass
    assert 'pg_snapshot of database worb' in info.value.msg
    assert str(holder.pid) in info.value.msg
    holder.terminate()
    holder.join()
    with job_lock(path, 'test job', wait=5):  # released once the holder is gone
        pass


def test_manifest_update_and_reload(tmp_path):
    manifest = Manifest(str(tmp_path))
    assert manifest.entries() == []
    with manifest.update() as entries:
        entries['b.dump'] = {'file': 'b.dump', 'time': '2026-01-02T00:00:00'}
        entries['a.dump'] = {'file': 'a.dump', 'time': '2026-01-01T00:00:00'}
    assert [e['file'] for e in Manifest(str(tmp_path)).entries()] == ['a.dump', 'b.dump']
    (tmp_path / 'manifest.json').write_text('{broken')
    with pytest.raises(BackupError):
        manifest.load()


def _entries(days_old, now, status='ok'):
    return [{'file': 'f%d' % d, 'time': format_timestamp(now - datetime.timedelta(days=d)),
             'status': status} for d in days_old]


def test_retention_deletes_only_old_beyond_keep_min():
    now = datetime.datetime(2026, 1, 20, tzinfo=UTC)
    keep, delete = plan_retention(_entries(range(12), now), now,
                                  max_age=datetime.timedelta(days=7), keep_min=3)
    assert sorted(e['file'] for e in delete) == ['f10', 'f11', 'f8', 'f9']
    assert all('older than 7 days' == e['reason'] for e in delete)
    assert len(keep) == 8


def test_retention_keeps_last_good_when_backups_stopped_weeks_ago():
    now = datetime.datetime(2026, 3, 1, tzinfo=UTC)
    entries = _entries([30, 31, 32, 33, 34], now) + _entries([29], now, status='failed_verification')
    keep, delete = plan_retention(entries, now, max_age=datetime.timedelta(days=7), keep_min=3)
    assert [e['file'] for e in keep] == ['f30', 'f31', 'f32']
    assert sorted(e['file'] for e in delete) == ['f29', 'f33', 'f34']


def test_retention_max_count_and_keep_min_validation():
    now = datetime.datetime(2026, 1, 20, tzinfo=UTC)
    keep, delete = plan_retention(_entries([0, 1, 2], now), now, max_count=1, keep_min=1)
    assert [e['file'] for e in keep] == ['f0']
    with pytest.raises(BackupError) as info:
        plan_retention([], now, keep_min=0)
    assert info.value.param == 'keep_min'


def test_metrics_failure_keeps_last_success(tmp_path):
    path = metrics.write_job_metrics('pg_snapshot', 'worb', True, 1.5, size=42,
                                     textfile_dir=str(tmp_path), now=1000)
    text = open(path).read()
    assert 'codeb_backup_last_success_timestamp_seconds{kind="pg_snapshot",target="worb"} 1000' in text
    assert 'codeb_backup_last_size_bytes{kind="pg_snapshot",target="worb"} 42' in text
    metrics.write_job_metrics('pg_snapshot', 'worb', False, 0.2, textfile_dir=str(tmp_path), now=2000)
    text = open(path).read()
    assert 'codeb_backup_last_success_timestamp_seconds{kind="pg_snapshot",target="worb"} 1000' in text
    assert 'codeb_backup_last_attempt_timestamp_seconds{kind="pg_snapshot",target="worb"} 2000' in text
    assert 'codeb_backup_last_status{kind="pg_snapshot",target="worb"} 0' in text
    assert [n for n in os.listdir(tmp_path) if n.startswith('.')] == []


def test_temps_of_matches_only_that_files_temporaries(tmp_path):
    mine = durable.temp_path(str(tmp_path / 'worb.json'))
    other = durable.temp_path(str(tmp_path / 'worb.json.json'))
    assert durable.remove_stale_temps(str(tmp_path), durable.temps_of('worb.json')) == \
        [os.path.basename(mine)]
    assert os.path.exists(other)
