"""Per-job locks: a second run waits, then fails naming the holder."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.errors import LockTimeout
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock


def _hold_lock(path, ready, seconds):
    with job_lock(path, 'test job'):
        ready.set()
        time.sleep(seconds)


def test_second_lock_waits_then_fails_with_holder(tmp_path):
    path = str(tmp_path / 'job.lock')
    ctx = multiprocessing.get_context('fork')
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(path, ready, 5))
    holder.start()
    assert ready.wait(10)
    with pytest.raises(LockTimeout) as info:
        with job_lock(path, 'pg_snapshot of database worb', wait=0.3):
            pass
    assert 'pg_snapshot of database worb' in info.value.msg
    assert str(holder.pid) in info.value.msg
    holder.terminate()
    holder.join()
    with job_lock(path, 'test job', wait=5):  # released once the holder is gone
        pass
