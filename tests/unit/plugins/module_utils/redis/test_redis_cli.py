"""The Redis host command's flags come from the modules' option definitions."""

from __future__ import annotations

import argparse

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.spec import argument_spec
from ansible_collections.codeb.backup.plugins.module_utils.redis import cli as rcli
from ansible_collections.codeb.backup.plugins.module_utils.redis import options as ropts


def _parse(argv):
    parser = argparse.ArgumentParser()
    rcli.register_cli(parser.add_subparsers(dest='command'))
    return parser.parse_args(argv)


@pytest.mark.parametrize('spelling', [
    ['--login-unix-socket', '/run/r.sock', '--login-user', 'backup', '--login-port', '7000'],
    ['--socket', '/run/r.sock', '--user', 'backup', '--port', '7000'],
])
def test_connection_flags_and_their_old_spellings(tmp_path, monkeypatch, spelling):
    secret = tmp_path / 'pw'
    secret.write_text('s3cret\n')
    monkeypatch.delenv('REDISCLI_AUTH', raising=False)
    for flag in ('--login-password-file', '--password-file'):
        args = _parse(['redis-snapshot'] + spelling + [flag, str(secret)])
        conn = rcli._conn_from_args(args)  # pylint: disable=protected-access
        assert conn == dict(ropts.connection_params({}), login_host='127.0.0.1',
                            login_port=7000, login_user='backup', login_password='s3cret',
                            login_unix_socket='/run/r.sock', tls=False, validate_certs=True)


def test_the_password_is_never_a_flag():
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest='command')
    rcli.register_cli(subparsers)
    for verb, sub in subparsers.choices.items():
        dests = set(action.dest for action in sub._actions)  # pylint: disable=protected-access
        assert 'login_password' not in dests, verb


def test_defaults_are_the_modules_defaults():
    spec = argument_spec(ropts.CONNECTION_OPTIONS + ropts.SNAPSHOT_OPTIONS)
    args = _parse(['redis-snapshot'])
    for name in ('backup_dir', 'instance', 'timeout', 'keep_min', 'rdb_max_age_hours',
                 'aof_keep', 'metrics_dir', 'lock_timeout', 'login_host', 'login_port',
                 'prune', 'verify_load'):
        assert getattr(args, name) == spec[name]['default'], name
    assert spec['backup_dir']['default'] == ropts.DEFAULT_BACKUP_DIR
    assert 'imported' not in spec['state']['choices']


@pytest.mark.parametrize('values,expected', [
    (None, ['rdb', 'aof']), (['rdb,aof'], ['rdb', 'aof']), (['rdb', 'aof'], ['rdb', 'aof']),
    (['aof'], ['aof'])])
def test_formats_as_a_comma_list_or_repeated(values, expected):
    argv = ['redis-snapshot']
    for value in values or []:
        argv += ['--formats', value]
    params = rcli.params_from_args(_parse(argv), rcli.SNAPSHOT_FLAGS)
    assert rcli._formats(params['formats']) == expected  # pylint: disable=protected-access


def test_an_unknown_format_names_the_parameter():
    with pytest.raises(BackupError) as info:
        rcli._formats(['rdb,tar'])  # pylint: disable=protected-access
    assert info.value.param == 'formats'


def test_verify_checks_all_snapshots_unless_told_otherwise():
    assert _parse(['redis-verify']).snapshot == 'all'
    assert _parse(['redis-restore']).snapshot == 'latest'
    assert _parse(['redis-restore', '--format', 'aof']).snapshot_format == 'aof'
