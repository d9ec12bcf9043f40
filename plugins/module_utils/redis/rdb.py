# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""RDB snapshots that are always fresh and whole.

``BGSAVE SCHEDULE`` (waits behind a running save or AOF rewrite instead of failing), then
poll ``INFO persistence`` until a save counted *after* the request has finished with
``rdb_last_bgsave_status:ok`` and ``rdb_last_save_time`` not older than the request. Only
then is the copy kept (a plain ``BGSAVE; sleep 5; cp`` copies whatever file is there). The
copy is written under a temporary name, checked with ``redis-check-rdb`` and only then
renamed to ``dump-{YYYY-MM-DDTHH:MM:SS}.rdb``."""

from __future__ import annotations

import os
import threading
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.redis.options import (
    DEFAULT_TIMEOUT, SAVE_POLL,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.connection import (
    persistence_info, wait_for, redis,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.checks import check_rdb
from ansible_collections.codeb.backup.plugins.module_utils.redis.store import artifact_name


def bgsave_fresh(client, timeout=DEFAULT_TIMEOUT, watcher=None):
    """Make Redis write an RDB that contains every write acknowledged before this call.

    Returns ``(server_time_requested, info_after, saves_before, retried)``. A save already
    running started before the request, so it is waited for and then ours is requested;
    ``BGSAVE SCHEDULE`` queues behind a running AOF rewrite instead of failing.
    ``watcher`` (optional) is armed just before the request and polled while the save runs
    (see ``_EarlyCopy``)."""
    wait_for(client, lambda i: not int(i['rdb_bgsave_in_progress']), timeout,
             'a running background save to finish')
    requested = int(client.time()[0])
    baseline = persistence_info(client)
    saves_before = int(baseline.get('rdb_saves', 0))
    started = time.monotonic()
    retried = False
    if watcher is not None:
        watcher.arm()
    while True:
        try:
            client.execute_command('BGSAVE', 'SCHEDULE')
            break
        except redis.exceptions.ResponseError as exc:
            if 'in progress' in str(exc).lower():
                # someone else's save started after our request: wait and request ours
                retried = True
                wait_for(client, lambda i: not int(i['rdb_bgsave_in_progress']),
                         max(1.0, timeout - (time.monotonic() - started)), 'a background save')
                continue
            raise BackupError('Redis at %s refused BGSAVE: %s' % (client.codeb_where, exc))

    def done(info):
        if int(info['rdb_bgsave_in_progress']):
            return False
        return int(info.get('rdb_saves', 0)) > saves_before or (
            info.get('rdb_last_bgsave_status') != 'ok'
            and int(info.get('rdb_last_save_time', 0)) < requested
            and int(info.get('aof_rewrite_in_progress', 0)) == 0
            and time.monotonic() - started > 1)

    info = wait_for(client, done, max(1.0, timeout - (time.monotonic() - started)),
                    'BGSAVE to finish', on_poll=watcher.poll if watcher else None,
                    interval=SAVE_POLL)
    if info.get('rdb_last_bgsave_status') != 'ok' or int(info['rdb_last_save_time']) < requested:
        raise BackupError('BGSAVE on Redis at %s failed (rdb_last_bgsave_status:%s); see the '
                          'Redis log (disk full? permissions of dir?)' % (
                              client.codeb_where, info.get('rdb_last_bgsave_status')))
    return requested, info, saves_before, retried


class _EarlyCopy(object):
    """Start copying and checking the new RDB as soon as the save's file appears.

    The save's child process writes ``temp-<pid>.rdb``, fsyncs it and renames it over
    ``dump.rdb``; the server only notices the child's exit on its next cron tick (up to
    1/hz s later), and we only see that on our next INFO poll. So, from just before our
    BGSAVE, this watches ``dump.rdb``: when a new inode appears, it is a whole file; it is
    opened (pinned) and copied to a temporary name while ``redis-check-rdb`` reads it.

    Nothing is committed on that basis: the copy is kept only if INFO then confirms that
    exactly one save finished since the request, successfully, and ``dump.rdb`` is still
    the pinned inode. Otherwise it is thrown away and the file is copied after the
    confirmation as before."""

    def __init__(self, source_path, final):
        self.source_path = source_path
        self.final = final
        self.initial = None
        self.source = None
        self.temp = None
        self.copied = {}
        self.checked = {}
        self.threads = []

    @staticmethod
    def _identity(stat_result):
        return (stat_result.st_dev, stat_result.st_ino)

    def arm(self):
        self.discard()
        try:
            self.initial = self._identity(os.stat(self.source_path))
        except OSError:
            self.initial = None

    def poll(self):
        if self.source is not None:
            return
        try:
            current = self._identity(os.stat(self.source_path))
        except OSError:
            return
        if current == self.initial:
            return
        try:
            source = open(self.source_path, 'rb')
        except OSError:
            return
        self.source = source
        self.temp = durable.temp_path(self.final)
        pinned = '/proc/%d/fd/%d' % (os.getpid(), source.fileno())
        self.threads = [threading.Thread(target=self._copy),
                        threading.Thread(target=_check_into, args=(pinned, self.checked))]
        for thread in self.threads:
            thread.start()

    def _copy(self):
        try:
            self.copied['result'] = durable.copy_hashed_to(self.source, self.temp)
        except (OSError, ValueError) as exc:
            self.copied['error'] = exc

    def take(self, saves_before, info, retried):
        """After INFO confirmed the save: ``(sha, size, keys, expires)`` of the committed
        copy, or None (nothing kept; copy after the confirmation instead)."""
        if self.source is None:
            return None
        for thread in self.threads:
            thread.join()
        try:
            same = self._identity(os.fstat(self.source.fileno())) == self._identity(
                os.stat(self.source_path))
        except OSError:
            same = False
        if (retried or not same or 'result' not in self.copied
                or int(info.get('rdb_saves', 0)) != saves_before + 1
                or info.get('rdb_last_bgsave_status') != 'ok'):
            self.discard()
            return None
        if 'error' in self.checked:
            self.discard()
            raise self.checked['error']
        try:
            durable.commit(self.temp, self.final)
        except BaseException:
            self.discard()
            raise
        self.temp = None
        self._close()
        sha, size = self.copied['result']
        keys, expires = self.checked['result']
        return sha, size, keys, expires

    def _close(self):
        if self.source is not None:
            self.source.close()
            self.source = None

    def discard(self):
        for thread in self.threads:
            thread.join()
        self.threads = []
        if self.temp is not None:
            durable.discard(self.temp)
            self.temp = None
        self._close()
        self.copied, self.checked = {}, {}


def snapshot_rdb(client, layout, backup_dir, stamp, timeout=DEFAULT_TIMEOUT):
    """BGSAVE, wait until fresh, copy, check; return the manifest entry (file committed)."""
    began = time.monotonic()
    source_path = os.path.join(layout['dir'], layout['dbfilename'])
    final = os.path.join(backup_dir, artifact_name('rdb', stamp))
    early = _EarlyCopy(source_path, final)
    try:
        requested, info, saves_before, retried = bgsave_fresh(client, timeout, watcher=early)
        bgsave_seconds = time.monotonic() - began
        taken = early.take(saves_before, info, retried)
    finally:
        early.discard()
    if taken is not None:
        sha, size, keys, expires = taken
    else:
        sha, size, keys, expires = _copy_and_check(source_path, final)
    return dict(file=os.path.basename(final), kind='rdb', time=stamp, sha256=sha,
                size_bytes=size, keys=keys, expires=expires, status='ok',
                lastsave=int(info['rdb_last_save_time']), requested=requested,
                bgsave_seconds=round(bgsave_seconds, 3), early_copy=taken is not None,
                duration_seconds=round(time.monotonic() - began, 3),
                redis_version=layout.get('redis_version'))


def _copy_and_check(source_path, final):
    try:
        source = open(source_path, 'rb')
    except OSError as exc:
        raise BackupError('cannot read the RDB file %s (%s); set data_dir if Redis runs in '
                          'another filesystem view' % (source_path, exc), param='data_dir')
    with source:
        # The open descriptor pins this inode even if a newer save renames over the file.
        # redis-check-rdb reads that same inode (through /proc) while we copy it, so the
        # check costs no extra wall time; the sha256 is of the bytes written to the copy.
        checked = {}
        pinned = '/proc/%d/fd/%d' % (os.getpid(), source.fileno())
        checker = threading.Thread(target=_check_into, args=(pinned, checked))
        checker.start()
        try:
            with durable.atomic_path(final) as temp:
                sha, size = durable.copy_hashed_to(source, temp)
                checker.join()
                if 'error' in checked:
                    raise checked['error']
                keys, expires = checked['result']
        finally:
            checker.join()
    return sha, size, keys, expires


def _check_into(path, box):
    try:
        box['result'] = check_rdb(path, name='the copy of the live RDB')
    except Exception as exc:  # re-raised by the caller, whatever it is
        box['error'] = exc
