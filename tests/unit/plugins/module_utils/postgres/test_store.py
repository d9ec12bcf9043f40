"""Unit tests of the snapshot store that need no server: names, listing, selection, hashes."""

from __future__ import annotations

import os

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.postgres import store

from .helpers import write_snapshots


def test_names_and_temp_patterns_do_not_cross_databases(tmp_path):
    assert store.snapshot_name('worb', '2026-01-07T10:30:00', 'zstd') == \
        'worb-2026-01-07T10:30:00.dump.zst'
    assert store.snapshot_name('worb', '2026-01-07T10:30:00', 'gzip') == \
        'worb-2026-01-07T10:30:00.dump'
    names = ['.tmp-foo-2026-01-01T00:00:00.dump.zst.abc',
             '.tmp-foo-2-2026-01-01T00:00:00.dump.zst.abc',
             '.tmp-foo-2026-01-01T00:00:00.dump.xyz',
             'foo-2026-01-01T00:00:00.dump.zst', '.tmp-manifest.json.x']
    for name in names:
        (tmp_path / name).write_text('x')
    removed = store.remove_stale(str(tmp_path), 'foo')
    assert removed == ['.tmp-foo-2026-01-01T00:00:00.dump.xyz',
                       '.tmp-foo-2026-01-01T00:00:00.dump.zst.abc']
    assert sorted(os.listdir(tmp_path)) == sorted(['.tmp-foo-2-2026-01-01T00:00:00.dump.zst.abc',
                                                   'foo-2026-01-01T00:00:00.dump.zst',
                                                   '.tmp-manifest.json.x'])


def test_select_entry(tmp_path):
    made = write_snapshots(tmp_path, 'worb', [3, 2, 1], status={1: 'failed_verification'})
    assert store.select_entry(str(tmp_path), 'worb')['file'] == made[1]  # latest good
    assert store.select_entry(str(tmp_path), 'worb', good_only=False)['file'] == made[2]
    stamp = made[0][len('worb-'):-len('.dump.zst')]
    assert store.select_entry(str(tmp_path), 'worb', stamp)['file'] == made[0]
    assert store.select_entry(str(tmp_path), 'worb', made[0])['file'] == made[0]
    for bad in ('2020-01-01T00:00:00', '../manifest.json', '.hidden', made[0] + 'x'):
        with pytest.raises(BackupError) as caught:
            store.select_entry(str(tmp_path), 'worb', bad)
        assert caught.value.param == 'snapshot'
    with pytest.raises(BackupError) as caught:
        store.select_entry(str(tmp_path), 'codeb')
    assert caught.value.param == 'snapshot' and 'no good snapshot' in caught.value.msg


def test_list_snapshots_newest_first_with_verification(tmp_path):
    made = write_snapshots(tmp_path, 'worb', [3, 2, 1], status={2: 'failed_verification'})
    write_snapshots(tmp_path, 'codeb', [1])
    listed = store.list_snapshots(str(tmp_path), 'worb')
    assert [s['file'] for s in listed] == list(reversed(made))
    assert [s['verified'] for s in listed] == [True, False, True]
    assert all(s['exists'] and s['size_bytes'] == 10 for s in listed)
    assert len(store.list_snapshots(str(tmp_path))) == 4
    assert store.list_snapshots(str(tmp_path / 'absent')) == []
    with pytest.raises(BackupError):
        store.list_snapshots(str(tmp_path), '../x')


def test_directory_sha256_is_order_independent_and_sensitive(tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    for directory, order in ((one, ('a', 'b')), (two, ('b', 'a'))):
        directory.mkdir()
        for name in order:
            (directory / name).write_text(name * 3)
    assert store.artifact_sha256(str(one)) == store.artifact_sha256(str(two))
    (two / 'a').write_text('aab')
    assert store.artifact_sha256(str(one)) != store.artifact_sha256(str(two))
    assert store.artifact_size(str(one)) == 6


def test_a_killed_restores_scratch_copy_counts_as_a_stale_temp(tmp_path):
    scratch = tmp_path / '.tmp-worb-2026-01-01T00:00:00.dump.zst.restore-ab12cd'
    scratch.mkdir()
    (scratch / 'archive.dump').write_bytes(b'x')
    assert store.remove_stale(str(tmp_path), 'worb') == [scratch.name]
    assert not scratch.exists()
