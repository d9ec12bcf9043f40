"""Retention: age and count limits never delete the newest keep_min good backups."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.naming import format_timestamp
from ansible_collections.codeb.backup.plugins.module_utils.retention import plan_retention

UTC = datetime.timezone.utc


def _entries(days_old, now, status='ok'):
    return [{'file': 'f%d' % d, 'time': format_timestamp(now - datetime.timedelta(days=d)),
             'status': status} for d in days_old]


def test_retention_deletes_only_old_beyond_keep_min():
    now = datetime.datetime(2026, 1, 20, tzinfo=UTC)
    keep, delete = plan_retention(_entries(range(12), now), now,
                                  max_age=datetime.timedelta(days=7), keep_min=3)
    assert sorted(e['file'] for e in delete) == ['f10', 'f11', 'f8', 'f9']
    assert all('older than 7 days' == e['reason'] for e in delete)
    assert len(keep) == 8


def test_retention_keeps_last_good_when_backups_stopped_weeks_ago():
    now = datetime.datetime(2026, 3, 1, tzinfo=UTC)
    entries = _entries([30, 31, 32, 33, 34], now) + _entries([29], now, status='failed_verification')
    keep, delete = plan_retention(entries, now, max_age=datetime.timedelta(days=7), keep_min=3)
    assert [e['file'] for e in keep] == ['f30', 'f31', 'f32']
    assert sorted(e['file'] for e in delete) == ['f29', 'f33', 'f34']


def test_retention_max_count_and_keep_min_validation():
    now = datetime.datetime(2026, 1, 20, tzinfo=UTC)
    keep, delete = plan_retention(_entries([0, 1, 2], now), now, max_count=1, keep_min=1)
    assert [e['file'] for e in keep] == ['f0']
    with pytest.raises(BackupError) as info:
        plan_retention([], now, keep_min=0)
    assert info.value.param == 'keep_min'
