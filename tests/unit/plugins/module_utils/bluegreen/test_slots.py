"""Unit tests of the blue-green slot state (plugins/module_utils/slots.py)."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.bluegreen import cli as bluegreen_cli
from ansible_collections.codeb.backup.plugins.module_utils.bluegreen import slots
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError, LockTimeout
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock
from helpers.trees import file_contents


def _deploy(state_dir, version, db=None, **kw):
    return slots.record_deploy(str(state_dir), 'worb', version, db_snapshot=db, **kw)


def test_first_deploy_goes_to_blue_with_the_slot_state_schema(tmp_path):
    result = _deploy(tmp_path, 'v1', db='worb-2026-01-07T10:00:00.dump', deployed_by='key_abc123',
                     redis_snapshot='worb-2026-01-07T10:00:00.rdb', env_backup='2026-01-07T10:00:00',
                     team_id='team1')
    assert result['changed'] and result['slot'] == 'blue'
    with open(os.path.join(str(tmp_path), 'worb.json')) as handle:
        data = json.load(handle)
    assert data['projectName'] == 'worb' and data['teamId'] == 'team1'
    assert data['activeSlot'] == 'blue'
    assert data['blue'] == dict(data['blue'], name='blue', state='active', version='v1',
                                deployedBy='key_abc123')
    assert data['green'] == {'name': 'green', 'state': 'empty'}
    assert data['lastUpdated'].endswith('Z')
    # no previous slot on a first deploy: the snapshots are kept in the history
    assert data['history'][-1] == dict(data['history'][-1], action='deployed', slot='blue',
                                       dbSnapshot='worb-2026-01-07T10:00:00.dump',
                                       redisSnapshot='worb-2026-01-07T10:00:00.rdb',
                                       envBackup='2026-01-07T10:00:00')
    assert oct(os.stat(os.path.join(str(tmp_path), 'worb.json')).st_mode & 0o777) == '0o644'


def test_second_deploy_alternates_and_old_becomes_grace(tmp_path):
    _deploy(tmp_path, 'v1', db='s1')
    result = _deploy(tmp_path, 'v2', db='s2', slot='green', redis_snapshot='r2',
                     env_backup='2026-01-07T10:00:00')
    state = result['slot_state']
    assert state['activeSlot'] == 'green'
    assert state['green']['version'] == 'v2' and state['green']['state'] == 'active'
    assert state['blue']['version'] == 'v1' and state['blue']['state'] == 'grace'
    # the snapshots taken before v2's deploy hold v1's data: they belong to v1's slot
    assert state['blue']['dbSnapshot'] == 's2'
    assert state['blue']['redisSnapshot'] == 'r2'
    assert state['blue']['envBackup'] == '2026-01-07T10:00:00'
    assert 'dbSnapshot' not in state['green']
    third = _deploy(tmp_path, 'v3', db='s3')
    assert third['slot'] == 'blue' and third['slot_state']['green']['state'] == 'grace'
    assert third['slot_state']['green']['dbSnapshot'] == 's3'
    assert 'redisSnapshot' not in third['slot_state']['green']


def test_same_deploy_twice_is_idempotent(tmp_path):
    _deploy(tmp_path, 'v1', db='s1')
    before = file_contents(tmp_path)
    again = _deploy(tmp_path, 'v1', db='s1')
    assert again['changed'] is False
    assert file_contents(tmp_path) == before


def test_deploy_into_active_slot_is_refused_and_changes_nothing(tmp_path):
    _deploy(tmp_path, 'v1', db='s1')
    before = file_contents(tmp_path)
    with pytest.raises(BackupError) as info:
        _deploy(tmp_path, 'v2', db='s2', slot='blue')
    assert info.value.param == 'slot' and 'inactive slot green' in info.value.msg
    assert file_contents(tmp_path) == before


def test_check_mode_predicts_and_writes_nothing(tmp_path):
    result = _deploy(tmp_path, 'v1', db='s1', check_mode=True)
    assert result['changed'] is True and result['slot'] == 'blue'
    assert os.listdir(str(tmp_path)) == []
    _deploy(tmp_path, 'v1', db='s1')
    _deploy(tmp_path, 'v2', db='s2')
    before = file_contents(tmp_path)
    plan = slots.record_rollback(str(tmp_path), 'worb', require=['db'], check_mode=True,
                                 metrics_dir=str(tmp_path / 'metrics'))
    assert plan['changed'] and plan['rollback']['target_slot'] == 'blue'
    assert plan['rollback']['db_snapshot'] == 's2'
    assert file_contents(tmp_path) == before


def test_rollback_and_roll_forward_with_safety_snapshot(tmp_path):
    metrics_dir = tmp_path / 'metrics'
    _deploy(tmp_path, 'v1', db='s1')
    _deploy(tmp_path, 'v2', db='s2')
    result = slots.record_rollback(str(tmp_path), 'worb', require=['db'],
                                   safety_db_snapshot='safety1', rolled_back_by='ops',
                                   metrics_dir=str(metrics_dir))
    state = result['slot_state']
    assert result['changed'] and state['activeSlot'] == 'blue'
    assert state['blue']['state'] == 'active' and state['green']['state'] == 'rolled_back'
    # the slot traffic left now remembers the data it last ran with
    assert state['green']['dbSnapshot'] == 'safety1'
    assert state['history'][-1]['action'] == 'rolled_back'
    assert state['history'][-1]['safetySnapshot'] == 'safety1'
    assert os.listdir(str(metrics_dir)) == ['codeb_backup_bluegreen_rollback_worb.prom']
    # roll forward again
    forward = slots.record_rollback(str(tmp_path), 'worb', require=['db'],
                                    metrics_dir=str(metrics_dir))
    assert forward['rollback']['target_slot'] == 'green'
    assert forward['rollback']['db_snapshot'] == 'safety1'
    assert forward['slot_state']['activeSlot'] == 'green'


def test_rollback_records_safety_env_and_redis(tmp_path):
    _deploy(tmp_path, 'v1')
    _deploy(tmp_path, 'v2', env_backup='2026-01-07T10:00:00', redis_snapshot='dump-a.rdb')
    result = slots.record_rollback(str(tmp_path), 'worb', require=['env', 'redis'],
                                   metrics_dir='', safety_env_backup='2026-01-07T11:00:00',
                                   safety_redis_snapshot='dump-b.rdb')
    assert result['rollback']['env_backup'] == '2026-01-07T10:00:00'
    assert result['rollback']['redis_snapshot'] == 'dump-a.rdb'
    assert result['slot_state']['green']['envBackup'] == '2026-01-07T11:00:00'
    assert result['slot_state']['green']['redisSnapshot'] == 'dump-b.rdb'
    for param in ('safety_env_backup', 'safety_redis_snapshot'):
        with pytest.raises(BackupError) as info:
            slots.record_rollback(str(tmp_path), 'worb', metrics_dir='', **{param: '../x'})
        assert info.value.param == param


def test_to_version_is_idempotent(tmp_path):
    _deploy(tmp_path, 'v1', db='s1')
    _deploy(tmp_path, 'v2', db='s2')
    first = slots.record_rollback(str(tmp_path), 'worb', to_version='v1', metrics_dir='')
    assert first['changed'] and first['slot'] == 'blue'
    before = file_contents(tmp_path)
    second = slots.record_rollback(str(tmp_path), 'worb', to_version='v1', metrics_dir='')
    assert second['changed'] is False
    assert file_contents(tmp_path) == before


@pytest.mark.parametrize('kwargs, param, words', [
    (dict(to_version='v9'), 'to_version', 'not in the history'),
    (dict(to_version='v0'), 'to_version', 'no longer in a slot'),
    (dict(to_version='../../etc'), 'to_version', 'not allowed'),
    (dict(require=['redis']), 'require_redis_snapshot', 'no redisSnapshot'),
    (dict(require=['env']), 'require_env_backup', 'no envBackup'),
    (dict(expect_generation=1), 'expect_generation', 'changed since the preflight'),
])
def test_rollback_refusals_change_nothing(tmp_path, kwargs, param, words):
    _deploy(tmp_path, 'v0', db='s0')
    _deploy(tmp_path, 'v1', db='s1')
    _deploy(tmp_path, 'v2', db='s2')
    before = file_contents(tmp_path)
    with pytest.raises(BackupError) as info:
        slots.record_rollback(str(tmp_path), 'worb', metrics_dir='', **kwargs)
    assert info.value.param == param
    assert words in info.value.msg
    assert file_contents(tmp_path) == before


def test_rollback_refused_when_target_slot_empty(tmp_path):
    _deploy(tmp_path, 'v1', db='s1')
    before = file_contents(tmp_path)
    with pytest.raises(BackupError) as info:
        slots.record_rollback(str(tmp_path), 'worb', metrics_dir='')
    assert 'slot green' in info.value.msg and 'empty' in info.value.msg
    assert info.value.param == 'project'
    assert file_contents(tmp_path) == before


def test_rollback_refused_when_db_snapshot_missing(tmp_path):
    _deploy(tmp_path, 'v1', db='s1')
    _deploy(tmp_path, 'v2')          # deployed without a DB snapshot: v1's data not kept
    with pytest.raises(BackupError) as info:
        slots.record_rollback(str(tmp_path), 'worb', require=['db'], metrics_dir='')
    assert info.value.param == 'require_db_snapshot' and 'no dbSnapshot' in info.value.msg


@pytest.mark.parametrize('project', ['../etc', 'a/b', '..', '-rf', ''])
def test_traversal_project_names_refused(tmp_path, project):
    for call in (lambda: slots.record_deploy(str(tmp_path), project, 'v1'),
                 lambda: slots.record_rollback(str(tmp_path), project, metrics_dir=''),
                 lambda: slots.query(str(tmp_path), project)):
        with pytest.raises(BackupError) as info:
            call()
        assert info.value.param == 'project'
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize('field, value', [('version', '../v1'), ('db_snapshot', '../../x.dump'),
                                          ('redis_snapshot', 'a/b'), ('env_backup', '.hidden'),
                                          ('deployed_by', 'x' * 200), ('team_id', 'bad\nline')])
def test_bad_deploy_fields_refused(tmp_path, field, value):
    version = value if field == 'version' else 'v1'
    kwargs = {} if field == 'version' else {field: value}
    with pytest.raises(BackupError) as info:
        slots.record_deploy(str(tmp_path), 'worb', version, **kwargs)
    assert info.value.param == field
    assert os.listdir(str(tmp_path)) == []


def test_unknown_project_is_named(tmp_path):
    with pytest.raises(BackupError) as info:
        slots.record_rollback(str(tmp_path), 'nosuch', metrics_dir=str(tmp_path / 'm'))
    assert info.value.param == 'project' and "unknown project 'nosuch'" in info.value.msg
    assert os.listdir(str(tmp_path)) == []
    assert slots.query(str(tmp_path), 'nosuch')['exists'] is False


def test_corrupt_or_foreign_state_file_is_refused_untouched(tmp_path):
    path = tmp_path / 'worb.json'
    for content in ('{not json', json.dumps({'projectName': 'other'}),
                    json.dumps(dict(slots.empty_state('worb'), activeSlot='red'))):
        path.write_text(content)
        with pytest.raises(BackupError) as info:
            _deploy(tmp_path, 'v1')
        assert 'was not changed' in info.value.msg
        assert path.read_text() == content


def test_active_slot_is_not_taken_from_file_times(tmp_path):
    _deploy(tmp_path, 'v1', db='s1')
    _deploy(tmp_path, 'v2', db='s2')
    path = str(tmp_path / 'worb.json')
    os.utime(path, (0, 0))
    assert slots.query(str(tmp_path), 'worb')['summary']['active_version'] == 'v2'


def test_history_is_short(tmp_path):
    for number in range(slots.HISTORY_SIZE + 5):
        _deploy(tmp_path, 'v%d' % number)
    state = slots.query(str(tmp_path), 'worb')['slot_state']
    assert len(state['history']) == slots.HISTORY_SIZE
    assert state['history'][-1]['version'] == 'v%d' % (slots.HISTORY_SIZE + 4)
    assert state['generation'] == slots.HISTORY_SIZE + 5


def _hold_lock(path, ready, seconds):
    with job_lock(path, 'test holder'):
        ready.set()
        time.sleep(seconds)


def test_concurrent_change_waits_then_fails_clearly(tmp_path):
    _deploy(tmp_path, 'v1')
    ready = multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_lock,
                                     args=(str(tmp_path / '.worb.lock'), ready, 3))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(LockTimeout) as info:
            _deploy(tmp_path, 'v2', lock_timeout=0.3)
        assert 'slot state change of project worb' in info.value.msg
    finally:
        holder.join()
    assert slots.query(str(tmp_path), 'worb')['summary']['active_version'] == 'v1'


def _cli_parser():
    import argparse
    parser = argparse.ArgumentParser()
    bluegreen_cli.register_cli(parser.add_subparsers(dest='command'))
    return parser


def test_cli_status(tmp_path):
    _deploy(tmp_path, 'v1', db='s1')
    args = _cli_parser().parse_args(['slot-status', '--project', 'worb',
                                     '--state-dir', str(tmp_path)])
    result = args.handler(args)
    assert result['summary']['active_slot'] == 'blue'
    args = _cli_parser().parse_args(['slot-status', '--project', 'nosuch',
                                     '--state-dir', str(tmp_path)])
    with pytest.raises(BackupError):
        args.handler(args)


def test_next_write_removes_only_this_projects_stale_temporaries(tmp_path):
    """A write killed before its rename leaves ``.tmp-<project>.json.*``;
    the next write of that state, under its lock, removes it, and only its own."""
    _deploy(tmp_path, 'v1')
    stale = tmp_path / '.tmp-worb.json.k1ll3d_x'
    stale.write_text('{"half": ')
    other = tmp_path / '.tmp-worb.json.json.abc123de'   # project "worb.json", mid-write
    other.write_text('{}')
    unrelated = tmp_path / '.tmp-worbx.json.abc123de'
    unrelated.write_text('{}')
    _deploy(tmp_path, 'v2')
    names = sorted(os.listdir(str(tmp_path)))
    assert '.tmp-worb.json.k1ll3d_x' not in names
    assert '.tmp-worb.json.json.abc123de' in names and '.tmp-worbx.json.abc123de' in names
    assert slots.load(str(tmp_path), 'worb')['green']['version'] == 'v2'


def _prom(metrics_dir):
    with open(os.path.join(str(metrics_dir), 'codeb_backup_bluegreen_rollback_worb.prom')) as fh:
        return fh.read()


def test_rollback_failure_of_any_kind_records_status_0(tmp_path, monkeypatch):
    """A rollback that fails on a full disk (an OSError, not a BackupError) is a failed
    attempt in the metrics, and the caller gets a BackupError that says what to do."""
    import errno
    from ansible_collections.codeb.backup.plugins.module_utils import durable
    metrics_dir = tmp_path / 'metrics'
    state_dir = tmp_path / 'slots'
    _deploy(state_dir, 'v1')
    _deploy(state_dir, 'v2')
    slots.record_rollback(str(state_dir), 'worb', metrics_dir=str(metrics_dir))
    assert 'codeb_backup_last_status{kind="bluegreen_rollback",target="worb"} 1' in _prom(metrics_dir)

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device', path)
    monkeypatch.setattr(durable, 'atomic_write_json', full)
    with pytest.raises(BackupError) as info:
        slots.record_rollback(str(state_dir), 'worb', metrics_dir=str(metrics_dir))
    assert 'full' in info.value.msg
    monkeypatch.undo()
    prom = _prom(metrics_dir)
    assert 'codeb_backup_last_status{kind="bluegreen_rollback",target="worb"} 0' in prom
    assert 'codeb_backup_last_success_timestamp_seconds' in prom      # kept from the success


def test_unwritable_metrics_never_hide_the_rollbacks_own_error(tmp_path):
    _deploy(tmp_path / 'slots', 'v1')
    metrics_file = tmp_path / 'not-a-dir'
    metrics_file.write_text('')
    with pytest.raises(BackupError) as info:
        slots.record_rollback(str(tmp_path / 'slots'), 'worb',
                              metrics_dir=str(metrics_file / 'sub'))
    assert 'target slot green' in info.value.msg and 'empty' in info.value.msg
    assert info.value.details.get('metrics_error')


def test_rollback_records_who_rolled_back_apart_from_who_deployed(tmp_path):
    _deploy(tmp_path, 'v1', db='s1', deployed_by='key_v1')
    _deploy(tmp_path, 'v2', db='s2', deployed_by='key_v2')
    state = slots.record_rollback(str(tmp_path), 'worb', rolled_back_by='oncall',
                                  metrics_dir='')['slot_state']
    assert state['green']['rolledBackBy'] == 'oncall'
    assert state['green']['deployedBy'] == 'key_v2'      # no longer overwritten by the rollback
    assert state['history'][-1]['by'] == 'oncall'
    # a deploy into that slot starts it afresh
    state = _deploy(tmp_path, 'v3', deployed_by='key_v3')['slot_state']
    assert 'rolledBackBy' not in state['green'] and 'rolledBackBy' not in state['blue']


def test_records_written_before_rolled_back_by_still_load(tmp_path):
    _deploy(tmp_path, 'v1', db='s1')
    _deploy(tmp_path, 'v2', db='s2')
    path = slots.state_path(str(tmp_path), 'worb')
    with open(path) as handle:
        old = json.load(handle)
    old['green'].update(state='rolled_back', rolledBackAt='2026-01-01T00:00:00Z')
    old['blue']['state'] = 'active'
    old['activeSlot'] = 'blue'
    with open(path, 'w') as handle:
        json.dump(old, handle)
    forward = slots.record_rollback(str(tmp_path), 'worb', metrics_dir='')
    assert forward['changed'] and forward['slot_state']['activeSlot'] == 'green'


def test_require_options_keep_their_old_names_as_aliases():
    from ansible_collections.codeb.backup.plugins.module_utils.bluegreen.options import (
        SLOT_ROLLBACK_MODULE)
    from ansible_collections.codeb.backup.plugins.module_utils.spec import argument_spec
    spec = argument_spec(SLOT_ROLLBACK_MODULE)
    assert spec['require_db_snapshot'] == dict(type='bool', default=False, aliases=['restore_db'])
    assert spec['require_redis_snapshot']['aliases'] == ['restore_redis']
    assert spec['require_env_backup']['aliases'] == ['restore_env']
