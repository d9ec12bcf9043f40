"""Unit tests of the pg_snapshot core that need no server: options, names, retention on a
real manifest on disk, snapshot selection, error classification, the CLI surface."""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import cli
from ansible_collections.codeb.backup.plugins.module_utils import pg_snapshot as core
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest

NOW = datetime.datetime(2026, 1, 20, 3, 0, 0, tzinfo=datetime.timezone.utc)


def _params(tmp_path, **extra):
    params = dict(database='worb', backup_dir=str(tmp_path))
    params.update(extra)
    return params


@pytest.mark.parametrize('value,expected', [
    ('zstd', ('zstd', 3)), ('zstd:1', ('zstd', 1)), ('ZSTD:19', ('zstd', 19)),
    ('gzip', ('gzip', 6)), ('gzip:9', ('gzip', 9)), ('none', ('none', 0)),
])
def test_parse_compression(value, expected):
    assert core.parse_compression(value) == expected


@pytest.mark.parametrize('value', ['zstd:0', 'zstd:20', 'gzip:10', 'gzip:0', 'lz4', 'none:1',
                                   '', 'zstd:-1', 'zstd:a'])
def test_parse_compression_refuses(value):
    with pytest.raises(BackupError) as caught:
        core.parse_compression(value)
    assert caught.value.param == 'compression'


def test_default_compression_is_valid_and_normalised(tmp_path):
    p = core.check_options(_params(tmp_path))
    assert p['compression'] == core.DEFAULT_COMPRESSION
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
        core.check_options(_params(tmp_path, **extra))
    assert caught.value.param == param
    assert param.split('_')[0] in caught.value.msg


def test_names_and_temp_patterns_do_not_cross_databases(tmp_path):
    assert core.snapshot_name('worb', '2026-01-07T10:30:00', 'zstd') == \
        'worb-2026-01-07T10:30:00.dump.zst'
    assert core.snapshot_name('worb', '2026-01-07T10:30:00', 'gzip') == \
        'worb-2026-01-07T10:30:00.dump'
    names = ['.tmp-foo-2026-01-01T00:00:00.dump.zst.abc',
             '.tmp-foo-2-2026-01-01T00:00:00.dump.zst.abc',
             '.tmp-foo-2026-01-01T00:00:00.dump.xyz',
             'foo-2026-01-01T00:00:00.dump.zst', '.tmp-manifest.json.x']
    for name in names:
        (tmp_path / name).write_text('x')
    removed = core._remove_stale(str(tmp_path), 'foo')
    assert removed == ['.tmp-foo-2026-01-01T00:00:00.dump.xyz',
                       '.tmp-foo-2026-01-01T00:00:00.dump.zst.abc']
    assert sorted(os.listdir(tmp_path)) == sorted(['.tmp-foo-2-2026-01-01T00:00:00.dump.zst.abc',
                                                   'foo-2026-01-01T00:00:00.dump.zst',
                                                   '.tmp-manifest.json.x'])


def _seed(tmp_path, database, ages_days, status=None, other=False):
    """Files and manifest entries for snapshots ``ages_days`` old (relative to NOW)."""
    manifest = Manifest(str(tmp_path))
    made = []
    with manifest.update() as entries:
        for age in ages_days:
            stamp = (NOW - datetime.timedelta(days=age)).strftime('%Y-%m-%dT%H:%M:%S')
            name = core.snapshot_name(database, stamp, 'zstd')
            (tmp_path / name).write_bytes(b'x' * 10)
            entries[name] = dict(file=name, time=stamp, kind=core.KIND, database=database,
                                 sha256=hashlib.sha256(b'x' * 10).hexdigest(), size_bytes=10,
                                 status=(status or {}).get(age, 'ok'))
            made.append(name)
    return made


def test_prune_keeps_keep_min_when_all_are_old(tmp_path):
    made = _seed(tmp_path, 'worb', [40, 30, 20, 15, 10])  # all older than 7 days
    other = _seed(tmp_path, 'codeb', [40, 30])
    result = core.prune(_params(tmp_path, keep_days=7, keep_min=3), now=NOW)
    assert result['changed'] is True
    assert sorted(p['file'] for p in result['pruned']) == sorted(made[:2])
    assert all('older than 7 days' == p['reason'] for p in result['pruned'])
    assert sorted(result['kept']) == sorted(made[2:])
    on_disk = sorted(n for n in os.listdir(tmp_path) if n.startswith('worb-'))
    assert on_disk == sorted(made[2:])
    assert sorted(Manifest(str(tmp_path)).load()) == sorted(made[2:] + other)
    # other databases untouched; a second run changes nothing
    again = core.prune(_params(tmp_path, keep_days=7, keep_min=3), now=NOW)
    assert again['changed'] is False and again['pruned'] == []
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith('codeb-')) == sorted(other)


def test_prune_check_mode_predicts_and_deletes_nothing(tmp_path):
    made = _seed(tmp_path, 'worb', [20, 15, 10, 9, 1])
    before = sorted(os.listdir(tmp_path))
    result = core.prune(_params(tmp_path), check_mode=True, now=NOW)
    assert result['changed'] is True
    assert [p['file'] for p in result['pruned']] == [made[1], made[0]]
    assert sorted(os.listdir(tmp_path)) == before


def test_failed_snapshots_do_not_count_towards_keep_min(tmp_path):
    made = _seed(tmp_path, 'worb', [30, 20, 12, 10, 9], status={10: 'failed_verification',
                                                                9: 'failed_verification'})
    result = core.prune(_params(tmp_path, keep_min=3), now=NOW)
    # the three newest GOOD ones (30, 20, 12 days) survive; the damaged ones go
    assert sorted(p['file'] for p in result['pruned']) == sorted(made[3:])
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith('worb-')) == sorted(made[:3])


def test_select_entry(tmp_path):
    made = _seed(tmp_path, 'worb', [3, 2, 1], status={1: 'failed_verification'})
    assert core.select_entry(str(tmp_path), 'worb')['file'] == made[1]  # latest good
    assert core.select_entry(str(tmp_path), 'worb', good_only=False)['file'] == made[2]
    stamp = made[0][len('worb-'):-len('.dump.zst')]
    assert core.select_entry(str(tmp_path), 'worb', stamp)['file'] == made[0]
    assert core.select_entry(str(tmp_path), 'worb', made[0])['file'] == made[0]
    for bad in ('2020-01-01T00:00:00', '../manifest.json', '.hidden', made[0] + 'x'):
        with pytest.raises(BackupError) as caught:
            core.select_entry(str(tmp_path), 'worb', bad)
        assert caught.value.param == 'snapshot'
    with pytest.raises(BackupError) as caught:
        core.select_entry(str(tmp_path), 'codeb')
    assert caught.value.param == 'snapshot' and 'no good snapshot' in caught.value.msg


def test_list_snapshots_newest_first_with_verification(tmp_path):
    made = _seed(tmp_path, 'worb', [3, 2, 1], status={2: 'failed_verification'})
    _seed(tmp_path, 'codeb', [1])
    listed = core.list_snapshots(str(tmp_path), 'worb')
    assert [s['file'] for s in listed] == list(reversed(made))
    assert [s['verified'] for s in listed] == [True, False, True]
    assert all(s['exists'] and s['size_bytes'] == 10 for s in listed)
    assert len(core.list_snapshots(str(tmp_path))) == 4
    assert core.list_snapshots(str(tmp_path / 'absent')) == []
    with pytest.raises(BackupError):
        core.list_snapshots(str(tmp_path), '../x')


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
    error = core.connection_error(stderr, dict(database='nope', login_user='postgres',
                                               maintenance_db='postgres', login_port=5),
                                  'pg_dump', 1)
    assert error.param == param


def test_pg_restore_object_errors_are_not_blamed_on_login_user():
    error = core.connection_error('pg_restore: error: could not execute query: ERROR:  role '
                                  '"app" does not exist', dict(login_user='postgres'), 'x', 1)
    assert error.param is None


def test_directory_sha256_is_order_independent_and_sensitive(tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    for directory, order in ((one, ('a', 'b')), (two, ('b', 'a'))):
        directory.mkdir()
        for name in order:
            (directory / name).write_text(name * 3)
    assert core.artifact_sha256(str(one)) == core.artifact_sha256(str(two))
    (two / 'a').write_text('aab')
    assert core.artifact_sha256(str(one)) != core.artifact_sha256(str(two))
    assert core.artifact_size(str(one)) == 6


def test_cli_surface_never_takes_a_password_argument(tmp_path):
    parser = argparse.ArgumentParser()
    core.register_cli(parser.add_subparsers())
    args = parser.parse_args(['pg-snapshot', '--database', 'worb', '--state', 'verified'])
    assert args.handler is core._cli_snapshot and args.state == 'verified'
    with pytest.raises(SystemExit):
        parser.parse_args(['pg-snapshot', '--database', 'worb', '--login-password', 'x'])
    assert 'pg_snapshot' in cli.SUBSYSTEMS


def test_cli_password_file_must_be_private(tmp_path):
    secret = tmp_path / 'pw'
    secret.write_text('s3cret\n')
    os.chmod(secret, 0o644)
    args = argparse.Namespace(login_password_file=str(secret))
    with pytest.raises(BackupError) as caught:
        core._read_password(args)
    assert caught.value.param == 'login_password_file'
    os.chmod(secret, 0o600)
    assert core._read_password(args) == 's3cret'


def test_unknown_state_is_refused(tmp_path):
    with pytest.raises(BackupError) as caught:
        core.run_state(_params(tmp_path, state='gone'))
    assert caught.value.param == 'state'


def test_cli_list_through_the_host_command_parser(tmp_path, capsys):
    made = _seed(tmp_path, 'worb', [2, 1])
    assert cli.main(['pg-snapshot-list', '--backup-dir', str(tmp_path), '--database', 'worb']) == 0
    import json
    out = json.loads(capsys.readouterr().out)
    assert [s['file'] for s in out['snapshots']] == list(reversed(made))
    assert out['size_bytes'] == 20 and out['changed'] is False
    assert cli.main(['pg-snapshot-list', '--backup-dir', str(tmp_path), '--database', '../x']) == 1
    assert json.loads(capsys.readouterr().out)['param'] == 'database'


def test_a_killed_restores_scratch_copy_counts_as_a_stale_temp(tmp_path):
    scratch = tmp_path / '.tmp-worb-2026-01-01T00:00:00.dump.zst.restore-ab12cd'
    scratch.mkdir()
    (scratch / 'archive.dump').write_bytes(b'x')
    assert core._remove_stale(str(tmp_path), 'worb') == [scratch.name]
    assert not scratch.exists()
