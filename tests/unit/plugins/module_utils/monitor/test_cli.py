"""``codeb-backup collect-metrics`` flags: each connection's options under its prefix reach
the subsystem's connection layer under the names it takes."""

from __future__ import annotations

import os

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import cli
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.monitor.cli import cli_params


def _params(argv, monkeypatch):
    monkeypatch.delenv('CODEB_PG_PASSWORD', raising=False)
    monkeypatch.delenv('REDISCLI_AUTH', raising=False)
    return cli_params(cli.build_parser().parse_args(['collect-metrics'] + argv))


def test_prefixed_flags_become_each_layers_own_options(monkeypatch, tmp_path):
    secret = tmp_path / 'redis.pw'
    secret.write_text('s3cret\n')
    os.chmod(secret, 0o600)
    p = _params(['--postgres', '--postgres-port', '5433', '--postgres-os-user', 'postgres',
                 '--postgres-bin-dir', '/opt/pg/bin', '--redis', '--redis-port', '6380',
                 '--redis-password-file', str(secret), '--redis-expect-aof',
                 '--pgbackrest-stanza', 'a', '--pgbackrest-stanza', 'b'], monkeypatch)
    assert p['postgres_connection']['login_port'] == 5433
    assert p['postgres_connection']['os_user'] == 'postgres'
    assert p['postgres_connection']['pg_bin_dir'] == '/opt/pg/bin'
    assert p['postgres_connection']['login_password'] is None
    assert p['redis_connection']['login_port'] == 6380
    assert p['redis_connection']['login_password'] == 's3cret'
    assert p['redis_name'] == '6380' and p['redis_expect_aof'] is True
    assert p['pgbackrest_stanza'] == ['a', 'b'] and p['pgbackrest_check'] is False
    assert not [k for k in p if k.startswith(('postgres_', 'redis_')) and
                k not in ('postgres_cluster', 'postgres_connection', 'redis_connection',
                          'redis_name', 'redis_expect_aof')]


def test_redis_name_defaults_to_the_socket_file_name(monkeypatch):
    p = _params(['--redis', '--redis-unix-socket', '/run/redis/cache.sock'], monkeypatch)
    assert p['redis_name'] == 'cache'


def test_check_without_a_stanza_is_refused(monkeypatch):
    with pytest.raises(BackupError) as caught:
        _params(['--pgbackrest-check'], monkeypatch)
    assert caught.value.param == 'pgbackrest_check'


def test_no_password_flag_exists():
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(['collect-metrics', '--postgres-password', 'x'])
