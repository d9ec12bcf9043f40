"""Unit tests of the Redis snapshot core that need no server: names, settings, retention."""

from __future__ import annotations

import datetime
import hashlib
import os

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import durable
from ansible_collections.codeb.backup.plugins.module_utils.redis import restore as rrestore
from ansible_collections.codeb.backup.plugins.module_utils.redis import store as rstore
from ansible_collections.codeb.backup.plugins.module_utils.redis import shipping as rship
from ansible_collections.codeb.backup.plugins.module_utils.redis import persistence as rpers
from ansible_collections.codeb.backup.plugins.module_utils.redis import checks as rchecks
from ansible_collections.codeb.backup.plugins.module_utils.redis import reconcile as rrecon
from ansible_collections.codeb.backup.plugins.module_utils.redis import snapshot as rsnap
from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError, BackupError

UTC = datetime.timezone.utc


@pytest.mark.parametrize('good', ['dump-2026-01-07T10:30:00.rdb', '2026-01-07T10:30:00',
                                  'appendonly-2026-01-07T10:30:00.aof.tar'])
def test_snapshot_names_accepted(good):
    assert rstore.validate_snapshot_name('snapshot', good) == good


@pytest.mark.parametrize('bad', ['../dump-2026-01-07T10:30:00.rdb', '/etc/passwd', '..', '',
                                 'dump-2026-01-07T10:30:00.rdb/../../x', 'dump.rdb', None, 7,
                                 'appendonly-2026-01-07T10:30:00.aof', 'current.rdb',
                                 'dump-2026-01-07T10:30:00.rdb\n'])
def test_snapshot_names_refused_naming_the_parameter(bad):
    with pytest.raises(BackupError) as info:
        rstore.validate_snapshot_name('snapshot', bad)
    assert info.value.param == 'snapshot' and 'snapshot' in info.value.msg


@pytest.mark.parametrize('value, expected', [
    ([], ''), ('', ''), ('""', ''), (None, ''),
    ([[900, 1], [300, 10], [60, 10000]], '900 1 300 10 60 10000'),
    ([{'seconds': 900, 'changes': 1}], '900 1'),
    ('900 1  300 10', '900 1 300 10'),
])
def test_save_normalisation_empty_list_means_save_off(value, expected):
    assert rpers.normalize_setting('save', value) == expected


@pytest.mark.parametrize('value, expected', [('64mb', 67108864), ('64MB', 67108864),
                                             ('1k', 1000), ('1kb', 1024), (100, 100),
                                             ('2gb', 2 * 1024 ** 3)])
def test_memory_units_as_redis_reports_them(value, expected):
    assert rpers.normalize_setting('auto-aof-rewrite-min-size', value) == str(expected)


def test_bad_memory_unit_names_settings():
    with pytest.raises(BackupError) as info:
        rpers.parse_memory('auto-aof-rewrite-min-size', '64 parsecs')
    assert info.value.param == 'settings'


def test_booleans_render_as_yes_no():
    assert rpers.normalize_setting('appendonly', True) == 'yes'
    assert rpers.normalize_setting('appendonly', False) == 'no'


def _entries(kind, hours_ago, now):
    out = []
    for hours in hours_ago:
        stamp = (now - datetime.timedelta(hours=hours)).strftime('%Y-%m-%dT%H:%M:%S')
        out.append(dict(file=rstore.artifact_name(kind, stamp), kind=kind, time=stamp, status='ok'))
    return out


def test_prune_keeps_24h_of_rdb_and_latest_aof():
    now = datetime.datetime(2026, 1, 7, 12, 0, tzinfo=UTC)
    entries = _entries('rdb', range(0, 30), now) + _entries('aof', [0, 1, 2], now)
    keep, delete = rstore.plan_prune(entries, now, keep_min=3)
    kept_rdb = [e for e in keep if e['kind'] == 'rdb']
    assert len(kept_rdb) == 25  # 0..24 hours ago (24 h is not older than 24 h)
    assert [e['file'] for e in keep if e['kind'] == 'aof'] == [entries[30]['file']]
    assert len(delete) == 5 + 2


def test_prune_never_drops_below_keep_min_when_backups_stopped():
    now = datetime.datetime(2026, 1, 7, 12, 0, tzinfo=UTC)
    entries = _entries('rdb', [24 * 30, 24 * 31, 24 * 32, 24 * 33], now)
    entries[0]['status'] = 'failed_verification'
    keep, delete = rstore.plan_prune(entries, now, keep_min=2)
    assert sorted(e['file'] for e in keep if e['status'] == 'ok') == sorted(
        e['file'] for e in entries[1:3])
    assert len(delete) == 2


def test_prune_bad_limits_name_parameters():
    now = datetime.datetime(2026, 1, 7, 12, 0, tzinfo=UTC)
    with pytest.raises(BackupError) as info:
        rstore.plan_prune([], now, keep_min=0)
    assert info.value.param == 'keep_min'
    with pytest.raises(BackupError) as info:
        rstore.plan_prune([], now, aof_keep=0)
    assert info.value.param == 'aof_keep'


def test_aof_manifest_parsing_refuses_paths(tmp_path):
    good = tmp_path / 'appendonly.aof.manifest'
    good.write_text('file appendonly.aof.1.base.rdb seq 1 type b\n'
                    'file appendonly.aof.1.incr.aof seq 1 type i\n')
    assert rchecks.read_aof_manifest(str(good))[1] == ['appendonly.aof.1.base.rdb',
                                                       'appendonly.aof.1.incr.aof']
    bad = tmp_path / 'bad.manifest'
    bad.write_text('file ../../etc/shadow seq 1 type b\n')
    with pytest.raises(BackupError):
        rchecks.read_aof_manifest(str(bad))
    empty = tmp_path / 'empty.manifest'
    empty.write_text('\n')
    with pytest.raises(BackupError):
        rchecks.read_aof_manifest(str(empty))


@pytest.mark.parametrize('kwargs, param', [
    (dict(backup_dir='relative'), 'backup_dir'),
    (dict(backup_dir='/opt/../etc'), 'backup_dir'),
    (dict(instance='a/b'), 'instance'),
    (dict(formats=['rdb', 'sql']), 'formats'),
    (dict(formats=[]), 'formats'),
    (dict(timeout=-1), 'timeout'),
    (dict(timeout='soon'), 'timeout'),
])
def test_snapshot_validation_before_connecting(tmp_path, kwargs, param):
    args = dict(backup_dir=str(tmp_path / 'b'), metrics_dir=str(tmp_path / 'm'))
    args.update(kwargs)
    # port 1: nothing listens; validation must fail first, naming the parameter
    with pytest.raises(BackupError) as info:
        rsnap.take_snapshot(dict(login_port=1), **args)
    assert info.value.param == param
    assert not (tmp_path / 'b').exists() and not (tmp_path / 'm').exists()


def test_restore_needs_a_way_to_start_redis(tmp_path):
    with pytest.raises(BackupError) as info:
        rrestore.restore_snapshot(dict(login_port=1), backup_dir=str(tmp_path), metrics_dir='')
    assert info.value.param == 'start_command'
    with pytest.raises(BackupError) as info:
        rrestore.Control(start_command='redis-server /etc/redis.conf', stop_command=[1, 2])
    assert info.value.param == 'stop_command'


def test_restore_latest_with_empty_backup_dir_names_snapshot(tmp_path):
    with pytest.raises(BackupError) as info:
        rstore.resolve_snapshot(str(tmp_path), 'latest')
    assert info.value.param == 'snapshot'
    with pytest.raises(BackupError) as info:
        rstore.resolve_snapshot(str(tmp_path), 'latest', 'zip')
    assert info.value.param == 'snapshot_format'


# --------------------------------------------------------------------------- evidence or not

def _tool(tmp_path, name, script):
    """A stand-in for a Redis check tool on PATH (unit tests only: what matters is how its
    exit status and output are read)."""
    bindir = tmp_path / 'bin'
    bindir.mkdir(exist_ok=True)
    path = bindir / name
    path.write_text('#!/bin/sh\n' + script)
    path.chmod(0o755)
    return str(bindir)


@pytest.mark.parametrize('script,evidence', [
    ('echo "--- RDB ERROR DETECTED ---"; echo "[offset 9] Wrong signature"; exit 1\n', True),
    ('exit 1\n', False),                      # could not even read it: says nothing
    ('kill -9 $$\n', False),                  # killed (OOM killer ...)
    ('echo "[info] 3 keys read"; echo "RDB looks OK"; exit 0\n', None),
])
def test_only_the_tool_rejecting_the_file_is_evidence(tmp_path, monkeypatch, script, evidence):
    monkeypatch.setenv('PATH', _tool(tmp_path, 'redis-check-rdb', script))
    target = tmp_path / 'x.rdb'
    target.write_bytes(b'REDIS0011')
    if evidence is None:
        assert rchecks.check_rdb(str(target)) == (3, 0)
        return
    with pytest.raises(BackupError) as info:
        rchecks.check_rdb(str(target))
    assert isinstance(info.value, ArtifactError) is evidence, info.value.msg
    assert info.value.param == 'snapshot'


def test_a_missing_tool_is_not_evidence_and_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    target = tmp_path / 'x.rdb'
    target.write_bytes(b'REDIS0011')
    with pytest.raises(BackupError) as info:
        rchecks.check_rdb(str(target))
    assert not isinstance(info.value, ArtifactError)
    assert 'redis-check-rdb' in info.value.msg and 'redis-tools' in info.value.msg


def _snapshot_file(backup, stamp, data=b'REDIS0011-unit'):
    name = rstore.artifact_name('rdb', stamp)
    (backup / name).write_bytes(data)
    return dict(file=name, kind='rdb', time=stamp, sha256=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data), status='ok', keys=1)


def test_an_interrupted_prune_is_finished_by_the_next_run(tmp_path, monkeypatch):
    """prune marks entries deleting, unlinks, drops the entries; a run killed after the
    mark leaves entries that are never good and that reconcile finishes."""
    backup = tmp_path / 'b'
    backup.mkdir()
    old = _snapshot_file(backup, '2026-01-01T10:00:00')
    new = _snapshot_file(backup, '2026-01-07T10:00:00')
    with rstore.Manifest(str(backup)).update() as entries:
        entries[old['file']] = dict(old, status='deleting')
        entries[new['file']] = new
    assert [e['file'] for e in rstore.list_snapshots(str(backup))] == [new['file'], old['file']]
    assert rstore.resolve_snapshot(str(backup), 'latest')['file'] == new['file']
    assert rship.held_sha256(str(backup)) == [new['sha256']]
    report = rrecon.reconcile(str(backup))
    assert report['finished_deletes'] == [old['file']]
    assert not (backup / old['file']).exists()
    assert list(rstore.Manifest(str(backup)).load()) == [new['file']]
    assert os.readlink(str(backup / 'current.rdb')) == new['file']


def test_prune_marks_before_it_deletes(tmp_path, monkeypatch):
    backup = tmp_path / 'b'
    backup.mkdir()
    old = _snapshot_file(backup, '2026-01-01T10:00:00')
    new = _snapshot_file(backup, '2026-01-07T10:00:00')
    with rstore.Manifest(str(backup)).update() as entries:
        entries[old['file']] = old
        entries[new['file']] = new
    seen = []
    real_discard = durable.discard

    def discard(path):
        seen.append(rstore.Manifest(str(backup)).load()[os.path.basename(path)]['status'])
        real_discard(path)
    monkeypatch.setattr(durable, 'discard', discard)
    now = datetime.datetime(2026, 1, 7, 12, 0, tzinfo=UTC)
    pruned = rstore.prune(str(backup), now=now, keep_min=1)
    assert [p['file'] for p in pruned] == [old['file']]
    assert pruned[0]['kind'] == 'rdb' and pruned[0]['time'] == old['time'] and pruned[0]['reason']
    assert seen == ['deleting']
    assert list(rstore.Manifest(str(backup)).load()) == [new['file']]


def test_a_whole_unlisted_snapshot_is_adopted_a_damaged_one_removed(tmp_path, monkeypatch):
    backup = tmp_path / 'b'
    backup.mkdir()
    good = _snapshot_file(backup, '2026-01-07T10:00:00', b'good')
    bad = _snapshot_file(backup, '2026-01-07T11:00:00', b'bad')
    monkeypatch.setenv('PATH', _tool(tmp_path, 'redis-check-rdb', (
        'read -r line < "$1"\n'
        'if [ "$line" = good ]; then echo "[info] 1 keys read"; echo "RDB looks OK"; exit 0; fi\n'
        'echo "--- RDB ERROR DETECTED ---"; exit 1\n')))
    report = rrecon.reconcile(str(backup))
    assert report['adopted'] == [good['file']]
    assert [r['file'] for r in report['removed_damaged']] == [bad['file']]
    entry = rstore.Manifest(str(backup)).load()[good['file']]
    assert entry['sha256'] == good['sha256'] and entry['status'] == 'ok' and entry['keys'] == 1
    assert not (backup / bad['file']).exists()
    assert os.readlink(str(backup / 'current.rdb')) == good['file']


def test_an_unlisted_snapshot_is_left_alone_when_it_cannot_be_checked(tmp_path, monkeypatch):
    backup = tmp_path / 'b'
    backup.mkdir()
    unlisted = _snapshot_file(backup, '2026-01-07T10:00:00')
    monkeypatch.setenv('PATH', str(tmp_path / 'empty'))
    with pytest.raises(BackupError) as info:
        rrecon.reconcile(str(backup))
    assert 'redis-check-rdb' in info.value.msg
    assert (backup / unlisted['file']).exists()
    assert rstore.Manifest(str(backup)).load() == {}


@pytest.mark.parametrize('field,value', [
    ('kind', 'exe'), ('sha256', 5), ('sha256', 'abc'), ('size_bytes', '10'),
    ('size_bytes', True), ('time', 'yesterday'), ('status', 'fine'), ('keys', 'many')])
def test_a_manifest_entry_of_the_wrong_shape_is_refused_naming_the_manifest(
        tmp_path, field, value):
    backup = tmp_path / 'b'
    backup.mkdir()
    entry = _snapshot_file(backup, '2026-01-07T10:00:00')
    with rstore.Manifest(str(backup)).update() as entries:
        entries[entry['file']] = dict(entry, **{field: value})
    for call in (lambda: rstore.list_snapshots(str(backup)),
                 lambda: rstore.resolve_snapshot(str(backup), 'latest'),
                 lambda: rstore.prune(str(backup)),
                 lambda: rship.held_sha256(str(backup))):
        with pytest.raises(BackupError) as info:
            call()
        assert info.value.param == 'manifest'
        assert os.path.join(str(backup), 'manifest.json') in info.value.msg
    assert (backup / entry['file']).exists()
