"""The one job runner: every failure of any type is recorded, reporting never hides the
job's own outcome, check mode writes nothing."""

from __future__ import annotations

import errno
import os

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import metrics
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.job import Job


def _values(directory, kind='pg_snapshot', target='worb'):
    text = open(metrics.metrics_path(str(directory), kind, target)).read()
    return {line.split('{')[0]: float(line.split()[-1]) for line in text.splitlines()
            if line.startswith('codeb_backup_')}


def test_success_records_size_and_success_time(tmp_path):
    with Job('pg_snapshot', 'worb', str(tmp_path)) as job:
        job.size = 42
    values = _values(tmp_path)
    assert values['codeb_backup_last_status'] == 1
    assert values['codeb_backup_last_size_bytes'] == 42
    assert values['codeb_backup_last_success_timestamp_seconds'] == \
        values['codeb_backup_last_attempt_timestamp_seconds']


@pytest.mark.parametrize('exc', [OSError(errno.ENOSPC, 'No space left on device', '/x'),
                                 ValueError('bad'), KeyError('k'), BackupError('own')])
def test_any_failure_sets_status_0_and_keeps_the_success_time(tmp_path, exc):
    with Job('pg_snapshot', 'worb', str(tmp_path)):
        pass
    success = _values(tmp_path)['codeb_backup_last_success_timestamp_seconds']
    with pytest.raises(BackupError) as caught:
        with Job('pg_snapshot', 'worb', str(tmp_path), what='pg_snapshot of worb'):
            raise exc
    values = _values(tmp_path)
    assert values['codeb_backup_last_status'] == 0
    assert values['codeb_backup_last_success_timestamp_seconds'] == success
    assert 'codeb_backup_last_size_bytes' not in values
    if isinstance(exc, OSError):
        assert 'filesystem is full' in caught.value.msg and 'ENOSPC' in caught.value.msg
    elif not isinstance(exc, BackupError):
        assert type(exc).__name__ in caught.value.msg


def test_failing_metrics_write_never_replaces_the_jobs_error(tmp_path):
    blocked = tmp_path / 'not-a-dir'
    blocked.write_text('')
    with pytest.raises(BackupError) as caught:
        with Job('pg_snapshot', 'worb', str(blocked)):
            raise BackupError('pg_dump failed', param='database')
    assert caught.value.msg == 'pg_dump failed' and caught.value.param == 'database'
    assert 'metrics_error' in caught.value.details


def test_success_whose_metrics_cannot_be_written_fails_loudly(tmp_path):
    blocked = tmp_path / 'not-a-dir'
    blocked.write_text('')
    with pytest.raises(BackupError) as caught:
        with Job('pg_snapshot', 'worb', str(blocked)):
            pass
    assert caught.value.param == 'metrics_dir'
    assert 'artifact is kept' in caught.value.msg


def test_check_mode_and_disabled_metrics_write_nothing(tmp_path):
    with pytest.raises(BackupError):
        with Job('pg_snapshot', 'worb', str(tmp_path), check_mode=True):
            raise BackupError('x')
    with Job('pg_snapshot', 'worb', ''):
        pass
    assert os.listdir(tmp_path) == []


def test_start_and_finish_apply_the_same_policy_as_with(tmp_path):
    """Several jobs open at once (one per snapshot kind): each records once, a failure's
    error comes back instead of being raised, and the other job's success is kept."""
    good = Job('redis_rdb', 'redis', str(tmp_path)).start()
    bad = Job('redis_aof', 'redis', str(tmp_path), what='redis aof snapshot').start()
    good.size = 7
    assert good.finish() is None
    error = bad.finish(OSError(errno.EROFS, 'Read-only file system', '/srv'))
    assert isinstance(error, BackupError) and 'read-only' in error.msg
    assert _values(tmp_path, 'redis_rdb', 'redis')['codeb_backup_last_size_bytes'] == 7
    assert _values(tmp_path, 'redis_aof', 'redis')['codeb_backup_last_status'] == 0


def test_metrics_of_a_job_that_no_longer_runs_can_be_removed(tmp_path):
    with Job('redis_aof', 'redis', str(tmp_path)):
        pass
    assert metrics.remove_job_metrics(str(tmp_path), 'redis_aof', 'redis') is True
    assert metrics.remove_job_metrics(str(tmp_path), 'redis_aof', 'redis') is False
    assert metrics.remove_job_metrics('', 'redis_aof', 'redis') is False
    assert os.listdir(tmp_path) == []


def test_gauges_a_job_measured_are_written_on_failure_too(tmp_path):
    with pytest.raises(BackupError):
        with Job('drill_redis', 'cache', str(tmp_path)) as job:
            job.gauges.update(drill_checks_failed=2, drill_recovery_point_lag_seconds=61.5)
            raise BackupError('2 checks failed')
    values = _values(tmp_path, 'drill_redis', 'cache')
    assert values['codeb_backup_last_status'] == 0
    assert values['codeb_backup_drill_checks_failed'] == 2
    assert values['codeb_backup_drill_recovery_point_lag_seconds'] == 61.5
