"""Names and timestamps: what may become a file name, and the one timestamp format."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.naming import (
    format_timestamp, parse_timestamp, unique_timestamp, validate_file_name, validate_name)

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
