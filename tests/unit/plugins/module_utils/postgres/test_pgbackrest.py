"""Unit tests of the pgBackRest/PITR core: target parsing, window checks, log parsing."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.postgres import pgbackrest as pb
from ansible_collections.codeb.backup.plugins.module_utils.postgres import pitr
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
    assert pitr.parse_target_time(text) == expected


@pytest.mark.parametrize('bad', [
    '2026-13-01 00:00:00', '2026-02-30 10:00:00', '2026-01-07 25:00:00', '2026-01-07',
    'yesterday', '', '2026-01-07 10:30', "2026-01-07 10:30:00'; DROP TABLE x; --", None, 1234,
    '2026-01-07 10:30:00+9', '10:30:00 2026-01-07',
])
def test_malformed_target_time_names_the_parameter(bad):
    with pytest.raises(BackupError) as info:
        pitr.parse_target_time(bad)
    assert info.value.param == 'target_time'
    assert 'target_time' in info.value.msg


def test_format_time_round_trips_and_is_utc():
    moment = pitr.parse_target_time('2026-01-07 19:30:00.000123+09:00')
    assert pb.format_time(moment) == '2026-01-07 10:30:00.000123+00'
    assert pitr.parse_target_time(pb.format_time(moment)) == moment
    assert pb.format_time(pitr.parse_target_time('2026-01-07 10:30:00')) == '2026-01-07 10:30:00+00'


def test_validate_target_combinations():
    assert pitr.validate_target(None, '2026-01-07 10:30:00')[0] == 'time'
    assert pitr.validate_target('latest', None) == ('latest', None)
    assert pitr.validate_target('immediate', None) == ('immediate', None)
    with pytest.raises(BackupError) as info:
        pitr.validate_target('time', None)
    assert info.value.param == 'target_time'
    with pytest.raises(BackupError) as info:
        pitr.validate_target('latest', '2026-01-07 10:30:00')
    assert info.value.param == 'target_time'
    with pytest.raises(BackupError) as info:
        pitr.validate_target('yesterday', None)
    assert info.value.param == 'target' and 'time, latest, immediate' in info.value.msg
    with pytest.raises(BackupError) as info:
        pitr.validate_target(None, None)
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
    pitr.check_in_window(earliest, earliest, latest)
    pitr.check_in_window(latest, earliest, latest)
    for outside in (earliest - datetime.timedelta(seconds=1), latest + datetime.timedelta(microseconds=1)):
        with pytest.raises(BackupError) as exc:
            pitr.check_in_window(outside, earliest, latest)
        assert exc.value.param == 'target_time'
        assert '2026-01-01 01:00:07+00' in exc.value.msg and '2026-01-07 11:02:03+00' in exc.value.msg
        assert exc.value.details['window'] == {'earliest': '2026-01-01 01:00:07+00',
                                               'latest': '2026-01-07 11:02:03+00'}


def test_restore_options():
    moment = pitr.parse_target_time('2026-01-07 10:30:00.5')
    assert pitr.restore_options('time', moment) == [
        '--delta', '--type=time', '--target=2026-01-07 10:30:00.500000+00', '--target-action=promote']
    assert pitr.restore_options('immediate', None, delta=False) == ['--type=immediate', '--target-action=promote']
    assert pitr.restore_options('latest', None) == ['--delta']


def test_recovered_point_from_the_server_log():
    log = ('2026-11-27 15:28:31 GMT LOG:  starting point-in-time recovery to 2026-11-27 15:28:13+00\n'
           '2026-11-27 15:28:32 GMT LOG:  recovery stopping before commit of transaction 745, '
           'time 2026-11-27 15:28:15.062541+00\n'
           '2026-11-27 15:28:32 GMT LOG:  last completed transaction was at log time '
           '2026-11-27 15:28:08.721531+00\n')
    assert pitr.recovered_point(log) == ('2026-11-27 15:28:15.062541+00', '2026-11-27 15:28:08.721531+00')
    assert pitr.recovered_point('nothing here') == (None, None)


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
    assert exc.value.param == 'backup_type' and 'full, diff, incr' in exc.value.msg


@pytest.mark.parametrize('path', ['relative/dir', '/opt/../etc', '/'])
def test_scratch_path_must_be_absolute_and_normal(path):
    with pytest.raises(BackupError) as exc:
        pitr._check_scratch_path(path)
    assert exc.value.param == 'scratch_path'


def test_scratch_path_not_made_by_us_is_refused(tmp_path):
    (tmp_path / 'precious').write_text('data')
    with pytest.raises(BackupError) as exc:
        pitr._check_scratch_path(str(tmp_path))
    assert exc.value.param == 'scratch_path'
    (tmp_path / pitr.SCRATCH_MARKER).write_text('')
    pitr._check_scratch_path(str(tmp_path))


def test_cli_registers_subcommands():
    from ansible_collections.codeb.backup.plugins.module_utils import cli
    args = cli.build_parser().parse_args(['pgbackrest-backup', '--stanza', 'codeb', '--type', 'full', '--if-none'])
    assert args.backup_type == 'full' and args.if_none and args.repo_user == 'pgbackrest'
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(['pgbackrest-backup', '--stanza', 'codeb', '--type', 'weekly'])


def test_a_host_never_set_up_is_told_to_run_setup_backup_first():
    """Not "OS user 'pgbackrest' does not exist", but what to do, naming the parameter;
    and nothing is touched (the check runs before anything else)."""
    for restore_to, param in (('scratch', 'repo_user'), ('in_place', 'os_user')):
        with pytest.raises(BackupError) as exc:
            pitr.restore('codeb', target='latest', restore_to=restore_to, check_mode=True,
                         **{param: 'codeb-never-set-up'})
        assert exc.value.param == param
        assert 'setup-backup.yml' in exc.value.msg and 'codeb-never-set-up' in exc.value.msg
    with pytest.raises(BackupError) as exc:
        pb.check_setup('postgres', 'repo_user', config='/nonexistent/pgbackrest.conf')
    assert exc.value.param == 'config' and 'setup-backup.yml' in exc.value.msg


def test_failed_backup_of_any_kind_records_status_0(tmp_path):
    """The backup job runs in the one Job: a failure before pgBackRest even ran (here a
    repository config that does not exist) is recorded, success time untouched."""
    from ansible_collections.codeb.backup.plugins.module_utils import metrics as metrics_core
    with pytest.raises(BackupError):
        pb.backup('main', backup_type='full', repo_user=None,
                  config=str(tmp_path / 'missing.conf'), metrics_dir=str(tmp_path),
                  lock_dir=str(tmp_path))
    text = open(metrics_core.metrics_path(str(tmp_path), 'pgbackrest_full', 'main')).read()
    assert 'codeb_backup_last_status{kind="pgbackrest_full",target="main"} 0' in text
    assert 'last_success_timestamp' not in text


# ---------------------------------------------------------------- the standby's seed backup

def _set(label, timeline, stop_lsn, kind='full', error=False, stop=1767780000):
    """One backup as ``pgbackrest info --output=json`` lists it."""
    entry = {'label': label, 'type': kind, 'timestamp': {'start': stop - 5, 'stop': stop},
             'archive': {'start': '%08X0000000000000003' % timeline,
                         'stop': '%08X0000000000000004' % timeline},
             'lsn': {'start': '0/3000028', 'stop': stop_lsn},
             'info': {'size': 1000, 'repository': {'delta': 100, 'size': 100}}}
    if error:
        entry['error'] = True
    return entry


# Timeline 3's history: it left timeline 1 at 0/5000000 and timeline 2 at 0/9000000.
HISTORY_3 = ('1\t0/5000000\tbefore 2026-01-07 10:30:00+00\n'
             '2\t0/9000000\tbefore 2026-01-07 11:30:00+00\n')


def test_no_backup_gives_no_seed():
    assert pb.seed_backup({'backup': []}, 1) is None
    assert pb.seed_backup({}, 3, HISTORY_3) is None


def test_only_a_full_backup_on_the_primary_timeline_is_the_seed():
    info = {'backup': [_set('20260107-010000F', 1, '0/3000100')]}
    assert pb.seed_backup(info, 1) == '20260107-010000F'
    # a primary on another timeline that never descended from timeline 1
    assert pb.seed_backup(info, 2, '') is None


def test_the_newest_of_full_and_diff_is_the_seed():
    info = {'backup': [_set('20260107-010000F', 1, '0/3000100'),
                       _set('20260107-010000F_20260108-010000D', 1, '0/4000100', kind='diff')]}
    assert pb.seed_backup(info, 1) == '20260107-010000F_20260108-010000D'


def test_after_an_in_place_pitr_a_backup_on_the_dead_branch_is_skipped():
    info = {'backup': [
        _set('A-F', 1, '0/3000100'),            # timeline 1, before the fork at 0/5000000
        _set('B-D', 1, '0/6000100', 'diff'),    # timeline 1 after the fork: dead branch
        _set('C-I', 2, '0/8000000', 'incr'),    # timeline 2, before its fork at 0/9000000
        _set('D-I', 2, '0/9000001', 'incr'),    # timeline 2 just past its fork: dead
    ]}
    assert pb.seed_backup(info, 3, HISTORY_3) == 'C-I'
    assert pb.seed_backup(dict(info, backup=info['backup'][:2]), 3, HISTORY_3) == 'A-F'
    # a backup ending exactly at the fork still lies on the history
    exact = {'backup': [_set('E-F', 2, '0/9000000')]}
    assert pb.seed_backup(exact, 3, HISTORY_3) == 'E-F'


def test_failed_or_incomplete_sets_are_never_the_seed():
    good = _set('A-F', 1, '0/3000100')
    flagged = _set('B-D', 1, '0/4000100', 'diff', error=True)
    no_lsn = _set('C-I', 1, '0/4000200', 'incr')
    del no_lsn['lsn']
    no_archive = _set('D-I', 1, '0/4000300', 'incr')
    no_archive['archive'] = None
    info = {'backup': [good, flagged, no_lsn, no_archive]}
    assert pb.seed_backup(info, 1) == 'A-F'
    assert pb.seed_backup({'backup': [flagged]}, 1) is None


def test_history_parsing_skips_comments_and_blank_lines():
    forks = pb.timeline_forks('# comment\n\n1\t0/5000000\treason\n2\tA/FF000000\tno recovery target\n')
    assert forks == {1: 0x5000000, 2: (0xA << 32) | 0xFF000000}
    assert pb.timeline_forks('') == {} and pb.timeline_forks(None) == {}


def test_describe_reports_backups_window_and_seed():
    info = {'name': 'codeb', 'status': {'code': 0, 'message': 'ok'},
            'backup': [_set('A-F', 1, '0/3000100', stop=1767780000),
                       _set('B-D', 1, '0/4000100', 'diff', error=True, stop=1767790000)]}
    result = pb.describe(info, timeline=1)
    assert result['seed_backup'] == 'A-F' and result['status'] == 'ok'
    assert result['earliest'] == result['newest_backup_stop'] == '2026-01-07 10:00:00+00'
    assert [(b['label'], b['timeline'], b['error']) for b in result['backups']] == [
        ('A-F', 1, False), ('B-D', 1, True)]
    empty = pb.describe({'name': 'codeb', 'backup': []})
    assert empty['earliest'] is None and empty['backups'] == [] and 'seed_backup' not in empty


def test_check_mode_on_a_host_not_set_up_predicts_the_stanza_and_the_backup(tmp_path):
    """A first setup run in check mode: nothing is installed yet, so both are predicted."""
    stanza = pb.ensure_stanza('codeb', repo_user='codeb-never-set-up', check_mode=True)
    assert stanza['changed'] and stanza['created'] and not stanza['checked']
    assert stanza['msg'].startswith('would create stanza codeb')
    taken = pb.backup('codeb', 'full', repo_user='codeb-never-set-up', if_none=True,
                      metrics_dir=str(tmp_path), lock_dir=str(tmp_path), check_mode=True)
    assert taken['changed'] and taken['msg'] == 'would take a full backup'
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(BackupError) as exc:
        pb.ensure_stanza('codeb', repo_user='codeb-never-set-up')
    assert exc.value.param == 'repo_user' and 'setup-backup.yml' in exc.value.msg


def test_options_are_defined_once_for_module_and_host_command():
    from ansible_collections.codeb.backup.plugins.module_utils import spec
    module_spec = spec.argument_spec(pb.OPTIONS)
    assert module_spec['pg_bin_dir']['aliases'] == ['pg_bin']
    assert module_spec['os_user']['aliases'] == ['pg_user']
    assert module_spec['repo_user']['aliases'] == ['scratch_user']
    assert module_spec['login_unix_socket'] == {'type': 'path', 'default': '/var/run/postgresql'}
    from ansible_collections.codeb.backup.plugins.module_utils import cli
    args = cli.build_parser().parse_args(['pgbackrest-backup', '--stanza', 'codeb', '--run-as', 'u',
                                          '--backup-type', 'diff'])
    assert args.repo_user == 'u' and args.backup_type == 'diff' and args.lock_timeout is None
