"""The one job runner: every failure of any type is recorded, reporting never hides the
job's own outcome, check mode writes nothing; and the host command answers in JSON."""

from __future__ import annotations

import errno
import json
import os

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import cli, metrics
from ansible_collections.codeb.backup.plugins.module_utils.errors import (
    ArtifactError, BackupError, as_backup_error)
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.naming import validate_file_name


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


def test_artifact_error_is_a_backup_error():
    assert isinstance(ArtifactError('bad sha'), BackupError)
    assert as_backup_error(ArtifactError('bad sha'), 'x').msg == 'bad sha'


@pytest.mark.parametrize('bad', ['../x', 'a/b', '.hidden', '..', '', 'x' * 256, None, 3,
                                 'a\x00b', '/abs'])
def test_validate_file_name_refuses(bad):
    with pytest.raises(BackupError) as caught:
        validate_file_name('file', bad)
    assert caught.value.param == 'file'


@pytest.mark.parametrize('good', ['worb-2026-01-07T10:30:00.dump.zst', 'master.env',
                                  'appendonly-2026-01-07T10:00:00.aof.tar', 'dump.rdb'])
def test_validate_file_name_accepts(good):
    assert validate_file_name('file', good) == good


def test_manifest_refuses_traversal_entries(tmp_path):
    (tmp_path / 'manifest.json').write_text(json.dumps({'format': 1, 'entries': {
        '../canary': {'file': '../canary', 'time': '2026-01-01T00:00:00'}}}))
    with pytest.raises(BackupError) as caught:
        Manifest(str(tmp_path)).load()
    assert caught.value.param == 'manifest' and 'tampered' in caught.value.msg


def test_manifest_update_removes_a_killed_writes_temporary(tmp_path):
    stale = tmp_path / '.tmp-manifest.json.abc123'
    stale.write_text('{')
    with Manifest(str(tmp_path)).update() as entries:
        entries['a.dump'] = {'file': 'a.dump', 'time': '2026-01-01T00:00:00'}
    assert not stale.exists()


def test_cli_prints_json_and_exits_1_for_any_exception(capsys, monkeypatch):
    def boom(_args):
        raise OSError(errno.EROFS, 'Read-only file system', '/opt/codeb')
    parser = cli.build_parser()
    monkeypatch.setattr(cli, 'build_parser', lambda: parser)
    for action in parser._subparsers._group_actions:
        action.choices['pg-snapshot-list'].set_defaults(handler=boom)
    assert cli.main(['pg-snapshot-list']) == 1
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result['failed'] is True and 'read-only' in result['msg']
    assert err == '', 'one result: the JSON on stdout, nothing else'
