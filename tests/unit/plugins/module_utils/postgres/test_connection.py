"""Unit tests of the PostgreSQL connection layer that need no server: error classification,
password files."""

from __future__ import annotations

import argparse
import os

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.postgres import connection


@pytest.mark.parametrize('stderr,param', [
    ('psql: error: connection to server at "127.0.0.1", port 5 failed: FATAL:  password '
     'authentication failed for user "postgres"', 'login_password'),
    ('connection to server at "127.0.0.1", port 1 failed: Connection refused', 'login_port'),
    ('connection to server on socket "/x/.s.PGSQL.5432" failed: No such file or directory',
     'login_port'),
    ('FATAL:  database "nope" does not exist', 'database'),
    ('FATAL:  Peer authentication failed for user "postgres"', 'login_user'),
    ('FATAL:  role "ghost" does not exist', 'login_user'),
])
def test_connection_errors_name_the_parameter(stderr, param):
    error = connection.connection_error(stderr, dict(database='nope', login_user='postgres',
                                                     maintenance_db='postgres', login_port=5),
                                        'pg_dump', 1)
    assert error.param == param


def test_pg_restore_object_errors_are_not_blamed_on_login_user():
    error = connection.connection_error('pg_restore: error: could not execute query: ERROR:  '
                                        'role "app" does not exist', dict(login_user='postgres'),
                                        'x', 1)
    assert error.param is None


def test_cli_password_file_must_be_private(tmp_path):
    secret = tmp_path / 'pw'
    secret.write_text('s3cret\n')
    os.chmod(secret, 0o644)
    args = argparse.Namespace(login_password_file=str(secret))
    with pytest.raises(BackupError) as caught:
        connection.cli_password(args)
    assert caught.value.param == 'login_password_file'
    os.chmod(secret, 0o600)
    assert connection.cli_password(args) == 's3cret'


def test_password_file_owned_by_another_user_is_refused(tmp_path):
    secret = tmp_path / 'pw'
    secret.write_text('s3cret\n')
    os.chmod(secret, 0o600)
    os.chown(secret, 65534, 65534)  # nobody: another user could replace the password
    with pytest.raises(BackupError) as caught:
        connection.read_password_file(str(secret))
    assert caught.value.param == 'login_password_file' and 'owned by uid 65534' in caught.value.msg


def test_missing_password_file_names_the_parameter(tmp_path):
    with pytest.raises(BackupError) as caught:
        connection.cli_password(argparse.Namespace(login_password_file=str(tmp_path / 'no')))
    assert caught.value.param == 'login_password_file'


def test_password_from_the_environment_without_a_file(monkeypatch):
    monkeypatch.setenv(connection.PASSWORD_ENV, 'from-env')
    assert connection.cli_password(argparse.Namespace(login_password_file=None)) == 'from-env'


def test_environment_replaces_the_callers_libpq_settings(monkeypatch):
    monkeypatch.setenv('PGDATABASE', 'elsewhere')
    monkeypatch.setenv('PGSERVICE', 'other')
    conn = connection.Connection(dict(login_host='db.example', login_port=5433,
                                      login_password='pw'))
    out = conn.run(['/usr/bin/env'], 'env').stdout.splitlines()
    assert 'PGHOST=db.example' in out and 'PGPORT=5433' in out and 'PGPASSWORD=pw' in out
    assert 'PGUSER=postgres' in out and 'PGAPPNAME=codeb-backup' in out
    assert not [line for line in out if line.startswith(('PGDATABASE=', 'PGSERVICE='))]


def test_unix_socket_default_and_empty(monkeypatch):
    assert connection.Connection({}).env()['PGHOST'] == connection.DEFAULT_UNIX_SOCKET
    assert 'PGHOST' not in connection.Connection(dict(login_unix_socket='')).env()


def test_os_user_that_does_not_exist_names_the_parameter():
    with pytest.raises(BackupError) as caught:
        connection.Connection(dict(os_user='no-such-user-here')).env()
    assert caught.value.param == 'os_user'


def test_os_user_switch_runs_the_tool_as_that_user():
    if os.geteuid() != 0:
        with pytest.raises(BackupError) as caught:
            connection.as_os_user('postgres')
        assert caught.value.param == 'os_user'
        return
    conn = connection.Connection(dict(os_user='postgres'))
    assert conn.switches_user
    assert conn.run(['/usr/bin/id', '-un'], 'id').stdout.strip() == 'postgres'
    assert conn.env()['HOME'] == os.path.expanduser('~postgres')


def test_missing_tool_names_pg_bin_dir(tmp_path):
    with pytest.raises(BackupError) as caught:
        connection.Connection(dict(pg_bin_dir=str(tmp_path))).tool('psql')
    assert caught.value.param == 'pg_bin_dir'


@pytest.mark.parametrize('extra,param', [
    (dict(login_port=0), 'login_port'), (dict(login_port='5432'), 'login_port'),
    (dict(connect_timeout=0), 'connect_timeout'),
])
def test_check_connection_names_the_parameter(extra, param):
    with pytest.raises(BackupError) as caught:
        connection.check_connection(extra)
    assert caught.value.param == param


def test_a_tool_that_hangs_is_stopped_at_its_timeout():
    with pytest.raises(BackupError) as caught:
        connection.Connection({}).run(['/bin/sleep', '30'], 'a hanging tool', timeout=0.5)
    assert 'a hanging tool did not finish within 0.5 s' in caught.value.msg
