"""Unit tests of the pgBackRest/PITR core: target parsing, window checks, log parsing."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import pgbackrest as pb
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError

UTC = datetime.timezone.utc


@pytest.mark.parametrize('text, expected', [
    ('2026-01-07 10:30:00', datetime.datetime(2026, 1, 7, 10, 30, tzinfo=UTC)),
    ('2026-01-07T10:30:00', datetime.datetime(2026, 1, 7, 10, 30, tzinfo=UTC)),
    ('2026-01-07 10:30:00.25', datetime.datetime(2026, 1, 7, 10, 30, 0, 250000, tzinfo=UTC)),
    ('2026-01-07 10:30:00Z', datetime.datetime(2026, 1, 7, 10, 30, tzinfo=UTC)),
    ('2026-01-07 19:30:00+09:00', datetime.datetime(2026, 1, 7, 10, 30, tzinfo=UTC)),
    ('2026-01-07 05:30:00-05', datetime.datetime(2026, 1, 7, 10, 30, tzinfo=UTC)),
    (' 2026-01-07 10:30:00 ', datetime.datetime(2026, 1, 7, 10, 30, tzinfo=UTC)),
])
def test_parse_target_time(text, expected):
    assert pb.parse_target_time(text) == expected


@pytest.mark.parametrize('bad', [
    '2026-13-01 00:00:00', '2026-02-30 10:00:00', '2026-01-07 25:00:00', '2026-01-07',
    'yesterday', '', '2026-01-07 10:30', "2026-01-07 10:30:00'; DROP TABLE x; --", None, 1234,
    '2026-01-07 10:30:00+9', '10:30:00 2026-01-07',
])
def test_malformed_target_time_names_the_parameter(bad):
    with pytest.raises(BackupError) as info:
        pb.parse_target_time(bad)
    assert info.value.param == 'target_time'
    assert 'target_time' in info.value.msg


def test_format_time_round_trips_and_is_utc():
    moment = pb.parse_target_time('2026-01-07 19:30:00.000123+09:00')
    assert pb.format_time(moment) == '2026-01-07 10:30:00.000123+00'
    assert pb.parse_target_time(pb.format_time(moment)) == moment
    assert pb.format_time(pb.parse_target_time('2026-01-07 10:30:00')) == '2026-01-07 10:30:00+00'


def test_validate_target_combinations():
    assert pb.validate_target(None, '2026-01-07 10:30:00')[0] == 'time'
    assert pb.validate_target('latest', None) == ('latest', None)
    assert pb.validate_target('immediate', None) == ('immediate', None)
    with pytest.raises(BackupError) as info:
        pb.validate_target('time', None)
    assert info.value.param == 'target_time'
    with pytest.raises(BackupError) as info:
        pb.validate_target('latest', '2026-01-07 10:30:00')
    assert info.value.param == 'target_time'
    with pytest.raises(BackupError) as info:
        pb.validate_target('yesterday', None)
    assert info.value.param == 'target' and 'time, latest, immediate' in info.value.msg
    with pytest.raises(BackupError) as info:
        pb.validate_target(None, None)
    assert info.value.param == 'target'


def _info(*stops):
    return {'name': 'codeb', 'backup': [{'label': 'b%d' % i, 'timestamp': {'start': s - 5, 'stop': s}}
                                        for i, s in enumerate(stops)]}


def test_window_from_info_uses_oldest_and_newest_backup():
    earliest, newest = pb.window_from_info(_info(1767780000, 1767790000))
    assert earliest == datetime.datetime.fromtimestamp(1767780000, UTC)
    assert newest == datetime.datetime.fromtimestamp(1767790000, UTC)


def test_window_ignores_errored_backups_and_refuses_an_empty_stanza():
    info = _info(1767780000, 1767790000)
    info['backup'][0]['error'] = True
    assert pb.window_from_info(info)[0] == datetime.datetime.fromtimestamp(1767790000, UTC)
    with pytest.raises(BackupError) as exc:
        pb.window_from_info({'name': 'codeb', 'backup': []})
    assert exc.value.param == 'stanza' and 'no valid backup' in exc.value.msg


def test_check_in_window_message_gives_the_window():
    earliest = datetime.datetime(2026, 1, 1, 1, 0, 7, tzinfo=UTC)
    latest = datetime.datetime(2026, 1, 7, 11, 2, 3, tzinfo=UTC)
    pb.check_in_window(earliest, earliest, latest)
    pb.check_in_window(latest, earliest, latest)
    for outside in (earliest - datetime.timedelta(seconds=1), latest + datetime.timedelta(microseconds=1)):
        with pytest.raises(BackupError) as exc:
            pb.check_in_window(outside, earliest, latest)
        assert exc.value.param == 'target_time'
        assert '2026-01-01 01:00:07+00' in exc.value.msg and '2026-01-07 11:02:03+00' in exc.value.msg
        assert exc.value.details['window'] == {'earliest': '2026-01-01 01:00:07+00',
                                               'latest': '2026-01-07 11:02:03+00'}


def test_restore_options():
    moment = pb.parse_target_time('2026-01-07 10:30:00.5')
    assert pb.restore_options('time', moment) == [
        '--delta', '--type=time', '--target=2026-01-07 10:30:00.500000+00', '--target-action=promote']
    assert pb.restore_options('immediate', None, delta=False) == ['--type=immediate', '--target-action=promote']
    assert pb.restore_options('latest', None) == ['--delta']


def test_recovered_point_from_the_server_log():
    log = ('2026-11-27 15:28:31 GMT LOG:  starting point-in-time recovery to 2026-11-27 15:28:13+00\n'
           '2026-11-27 15:28:32 GMT LOG:  recovery stopping before commit of transaction 745, '
           'time 2026-11-27 15:28:15.062541+00\n'
           '2026-11-27 15:28:32 GMT LOG:  last completed transaction was at log time '
           '2026-11-27 15:28:08.721531+00\n')
    assert pb.recovered_point(log) == ('2026-11-27 15:28:15.062541+00', '2026-11-27 15:28:08.721531+00')
    assert pb.recovered_point('nothing here') == (None, None)


@pytest.mark.parametrize('stanza', ['../etc', 'a/b', '', '-x', '.hidden'])
def test_bad_stanza_names_are_refused_before_running_anything(stanza):
    with pytest.raises(BackupError) as exc:
        pb.stanza_info(stanza)
    assert exc.value.param == 'stanza'
    with pytest.raises(BackupError) as exc:
        pb.backup(stanza, 'full')
    assert exc.value.param == 'stanza'


def test_bad_backup_type_is_refused():
    with pytest.raises(BackupError) as exc:
        pb.backup('codeb', 'weekly')
    assert exc.value.param == 'type' and 'full, diff, incr' in exc.value.msg


@pytest.mark.parametrize('path', ['relative/dir', '/opt/../etc', '/'])
def test_scratch_path_must_be_absolute_and_normal(path):
    with pytest.raises(BackupError) as exc:
        pb._check_scratch_path(path)
    assert exc.value.param == 'scratch_path'


def test_scratch_path_not_made_by_us_is_refused(tmp_path):
    (tmp_path / 'precious').write_text('data')
    with pytest.raises(BackupError) as exc:
        pb._check_scratch_path(str(tmp_path))
    assert exc.value.param == 'scratch_path'
    (tmp_path / pb.SCRATCH_MARKER).write_text('')
    pb._check_scratch_path(str(tmp_path))


def test_cli_registers_subcommands():
    from ansible_collections.codeb.backup.plugins.module_utils import cli
    args = cli.build_parser().parse_args(['pgbackrest-backup', '--stanza', 'codeb', '--type', 'full', '--if-none'])
    assert args.backup_type == 'full' and args.if_none and args.run_as == 'pgbackrest'
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(['pgbackrest-backup', '--stanza', 'codeb', '--type', 'weekly'])


def test_a_host_never_set_up_is_told_to_run_setup_backup_first():
    """Issue 9 #15: not "OS user 'pgbackrest' does not exist", but what to do, naming the
    parameter; and nothing is touched (the check runs before anything else)."""
    for restore_to, param in (('scratch', 'scratch_user'), ('in_place', 'pg_user')):
        with pytest.raises(BackupError) as exc:
            pb.restore('codeb', target='latest', restore_to=restore_to, check_mode=True,
                       **{param: 'codeb-never-set-up'})
        assert exc.value.param == param
        assert 'setup-backup.yml' in exc.value.msg and 'codeb-never-set-up' in exc.value.msg
    with pytest.raises(BackupError) as exc:
        pb.check_setup('postgres', 'run_as', config='/nonexistent/pgbackrest.conf')
    assert exc.value.param == 'config' and 'setup-backup.yml' in exc.value.msg


def test_failed_backup_of_any_kind_records_status_0(tmp_path):
    """The backup job runs in the one Job: a failure before pgBackRest even ran (here a
    repository config that does not exist) is recorded, success time untouched."""
    from ansible_collections.codeb.backup.plugins.module_utils import metrics as metrics_core
    with pytest.raises(BackupError):
        pb.backup('main', backup_type='full', run_as=None,
                  config=str(tmp_path / 'missing.conf'), metrics_dir=str(tmp_path),
                  lock_dir=str(tmp_path))
    text = open(metrics_core.metrics_path(str(tmp_path), 'pgbackrest_full', 'main')).read()
    assert 'codeb_backup_last_status{kind="pgbackrest_full",target="main"} 0' in text
    assert 'last_success_timestamp' not in text
