"""Unit tests of the snapshot states that need no server: retention on a real manifest on disk."""

from __future__ import annotations

import os

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.postgres import snapshot

from .helpers import NOW, _params, write_snapshots


def test_prune_keeps_keep_min_when_all_are_old(tmp_path):
    made = write_snapshots(tmp_path, 'worb', [40, 30, 20, 15, 10])  # all older than 7 days
    other = write_snapshots(tmp_path, 'codeb', [40, 30])
    result = snapshot.prune(_params(tmp_path, keep_days=7, keep_min=3), now=NOW)
    assert result['changed'] is True
    assert sorted(p['file'] for p in result['pruned']) == sorted(made[:2])
    assert all('older than 7 days' == p['reason'] for p in result['pruned'])
    assert sorted(result['kept']) == sorted(made[2:])
    on_disk = sorted(n for n in os.listdir(tmp_path) if n.startswith('worb-'))
    assert on_disk == sorted(made[2:])
    assert sorted(Manifest(str(tmp_path)).load()) == sorted(made[2:] + other)
    # other databases untouched; a second run changes nothing
    again = snapshot.prune(_params(tmp_path, keep_days=7, keep_min=3), now=NOW)
    assert again['changed'] is False and again['pruned'] == []
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith('codeb-')) == sorted(other)


def test_prune_check_mode_predicts_and_deletes_nothing(tmp_path):
    made = write_snapshots(tmp_path, 'worb', [20, 15, 10, 9, 1])
    before = sorted(os.listdir(tmp_path))
    result = snapshot.prune(_params(tmp_path), check_mode=True, now=NOW)
    assert result['changed'] is True
    assert [p['file'] for p in result['pruned']] == [made[1], made[0]]
    assert sorted(os.listdir(tmp_path)) == before


def test_failed_snapshots_do_not_count_towards_keep_min(tmp_path):
    made = write_snapshots(tmp_path, 'worb', [30, 20, 12, 10, 9],
                           status={10: 'failed_verification', 9: 'failed_verification'})
    result = snapshot.prune(_params(tmp_path, keep_min=3), now=NOW)
    # the three newest GOOD ones (30, 20, 12 days) survive; the damaged ones go
    assert sorted(p['file'] for p in result['pruned']) == sorted(made[3:])
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith('worb-')) == sorted(made[:3])


def test_unknown_state_is_refused(tmp_path):
    with pytest.raises(BackupError) as caught:
        snapshot.run_state(_params(tmp_path, state='gone'))
    assert caught.value.param == 'state'
