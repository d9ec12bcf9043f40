# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-job locks: a second run of the same job waits, then fails with a clear message."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

from ansible_collections.codeb.backup.plugins.module_utils.errors import LockTimeout
from ansible_collections.codeb.backup.plugins.module_utils.spec import Option

DEFAULT_WAIT = 60.0
_POLL = 0.1


def lock_timeout_option(default=DEFAULT_WAIT, of='the same job'):
    """The ``lock_timeout`` option of a job: how long a second run waits for the first."""
    return Option('lock_timeout', type='float',
                  default=None if default is None else float(default),
                  help='seconds a second run of %s waits for the first, then fails' % of)


@contextlib.contextmanager
def job_lock(lock_path, what, wait=DEFAULT_WAIT):
    """Hold an exclusive flock on ``lock_path`` for the duration of the block.

    ``what`` describes the job for the error message (e.g. "pg_snapshot of database worb").
    The lock file records the holder's pid. The kernel drops a flock when its holder dies,
    so a killed run never leaves a stale lock behind.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + max(0.0, float(wait))
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    raise LockTimeout(
                        'another %s is running (lock %s held by pid %s); waited %.0f s. '
                        'Let it finish, or raise lock_timeout.' % (what, lock_path, holder, wait),
                        param='lock_timeout', lock=lock_path, holder_pid=holder)
                time.sleep(_POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _read_holder(fd):
    try:
        return os.pread(fd, 32, 0).decode().strip() or 'unknown'
    except OSError:
        return 'unknown'
