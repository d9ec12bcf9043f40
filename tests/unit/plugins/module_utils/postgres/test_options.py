"""Unit tests of the PostgreSQL snapshot options: compression, names, paths, ranges."""

from __future__ import annotations

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.postgres import options

from .helpers import _params


@pytest.mark.parametrize('value,expected', [
    ('zstd', ('zstd', 3)), ('zstd:1', ('zstd', 1)), ('ZSTD:19', ('zstd', 19)),
    ('gzip', ('gzip', 6)), ('gzip:9', ('gzip', 9)), ('none', ('none', 0)),
])
def test_parse_compression(value, expected):
    assert options.parse_compression(value) == expected


@pytest.mark.parametrize('value', ['zstd:0', 'zstd:20', 'gzip:10', 'gzip:0', 'lz4', 'none:1',
                                   '', 'zstd:-1', 'zstd:a'])
def test_parse_compression_refuses(value):
    with pytest.raises(BackupError) as caught:
        options.parse_compression(value)
    assert caught.value.param == 'compression'


def test_default_compression_is_valid_and_normalised(tmp_path):
    p = options.check_options(_params(tmp_path))
    assert p['compression'] == options.DEFAULT_COMPRESSION
    assert (p['_method'], p['format'], p['jobs']) == ('zstd', 'custom', 1)
    assert p['target_database'] == 'worb'


@pytest.mark.parametrize('extra,param', [
    (dict(database='../x'), 'database'), (dict(database='a/b'), 'database'),
    (dict(database='..'), 'database'), (dict(database=''), 'database'),
    (dict(database=None), 'database'), (dict(database='x' * 64), 'database'),
    (dict(target_database='../x'), 'target_database'),
    (dict(backup_dir='relative'), 'backup_dir'), (dict(backup_dir='/a/../b'), 'backup_dir'),
    (dict(format='tar'), 'format'), (dict(format='directory', compression='zstd'), 'compression'),
    (dict(jobs=0), 'jobs'), (dict(jobs='2'), 'jobs'), (dict(jobs=True), 'jobs'),
    (dict(keep_min=0), 'keep_min'), (dict(keep_days=-1), 'keep_days'),
    (dict(login_port=0), 'login_port'), (dict(login_port=70000), 'login_port'),
])
def test_check_options_names_the_parameter(tmp_path, extra, param):
    with pytest.raises(BackupError) as caught:
        options.check_options(_params(tmp_path, **extra))
    assert caught.value.param == param
    assert param.split('_')[0] in caught.value.msg
