# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scratch space of the restore drills, and what keeps it away from production.

Each drill kind has one lock and one record (``{scratch_path}/.drill-<kind>.json``). Every
directory a drill creates and every server it starts is written to the record, durably,
before it exists; the next run of that kind, holding the lock, stops what the record names
(only if it is still that process) and removes the directories, so a drill killed at any
moment leaves nothing behind for longer than one run. A scratch path that is, or lies
inside, a production data directory is refused before anything is created."""

from __future__ import annotations

import binascii
import contextlib
import os
import shutil
import signal

from ansible_collections.codeb.backup.plugins.module_utils import durable, naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock
from ansible_collections.codeb.backup.plugins.module_utils.redis.connection import proc_start_time
from ansible_collections.codeb.backup.plugins.module_utils.redis.scratch import (
    read_record, remove_record, stop_leftover_scratch, stop_recorded_process)

# Servers whose working directory is their data directory (both chdir into it).
_SERVER_PROGRAMS = ('postgres', 'redis-server')
_MIB = 1024 * 1024


def running_data_dirs():
    """The data directories of the PostgreSQL and Redis servers running on this host."""
    found = set()
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open('/proc/%s/comm' % pid) as handle:
                comm = handle.read().strip()
            if comm in _SERVER_PROGRAMS:
                found.add(os.path.realpath(os.readlink('/proc/%s/cwd' % pid)))
        except OSError:
            continue  # gone, or not ours to read
    return found


def _is_data_dir(path):
    return any(os.path.exists(os.path.join(path, name)) for name in ('PG_VERSION', 'postmaster.pid'))


def check_scratch_path(path, protected_paths):
    """Refuse a scratch path that is, or is inside, a production data directory: one of
    ``protected_paths``, the working directory of a running postgres or redis-server, or a
    directory holding a PostgreSQL cluster (``PG_VERSION`` / ``postmaster.pid``)."""
    real = os.path.realpath(path)
    protected = set(os.path.realpath(p) for p in protected_paths) | running_data_dirs()
    for data_dir in sorted(protected):
        if real == data_dir or real.startswith(data_dir.rstrip('/') + '/'):
            raise BackupError('scratch_path %s is (or is inside) the production data directory %s;'
                              ' a drill must never restore there. Choose a directory of its own'
                              % (path, data_dir), param='scratch_path')
    probe = real
    while True:
        if _is_data_dir(probe):
            raise BackupError('scratch_path %s is (or is inside) the PostgreSQL data directory %s;'
                              ' a drill must never restore there. Choose a directory of its own'
                              % (path, probe), param='scratch_path')
        parent = os.path.dirname(probe)
        if parent == probe:
            return real
        probe = parent


def check_free_space(path, need_bytes, reserve_mb, what):
    """Refuse to start restoring ``what`` unless the scratch filesystem has ``need_bytes``
    plus the reserve free."""
    stats = os.statvfs(path)
    free = stats.f_bavail * stats.f_frsize
    need = int(need_bytes) + int(reserve_mb) * _MIB
    if free < need:
        raise BackupError('scratch_path %s has %d MiB free; the drill of %s needs about %d MiB '
                          '(an estimate of the restored size plus scratch_reserve_mb=%d). Free '
                          'space there, point scratch_path at a larger filesystem or lower '
                          'scratch_reserve_mb' % (path, free // _MIB, what, need // _MIB + 1,
                                                  reserve_mb), param='scratch_path',
                          free_bytes=free, needed_bytes=need)
    return free


def _stop_cluster_in(path):
    """Stop a PostgreSQL cluster running from ``path`` or ``path/data`` that its own
    ``postmaster.pid`` names (pg_ctl starts one the record cannot know the pid of in
    advance): only a postgres whose command line names that data directory."""
    stopped = []
    for data in (path, os.path.join(path, 'data')):
        try:
            with open(os.path.join(data, 'postmaster.pid')) as handle:
                pid = int(handle.readline().strip())
        except (OSError, ValueError):
            continue
        if pid > 1 and stop_recorded_process(pid, proc_start_time(pid), 'postgres', data, 30,
                                             first_signal=signal.SIGQUIT):
            stopped.append(pid)
    return stopped


class Scratch(object):
    """The scratch space of one drill kind: ``{scratch_path}/<kind>/``."""

    def __init__(self, scratch_path, kind):
        self.base = scratch_path
        self.kind = kind
        self.root = os.path.join(scratch_path, kind)
        self.record_path = os.path.join(scratch_path, '.drill-%s.json' % kind)
        self.lock_path = os.path.join(scratch_path, '.drill-%s.lock' % kind)
        self.record = None

    @contextlib.contextmanager
    def held(self, lock_timeout):
        """Lock, remove what a killed run left, yield the report of that; clean up whatever
        this run left on the way out, however it ends."""
        # 0711: the scratch servers' OS users must traverse it, nobody may list it
        durable.ensure_dir(self.base, mode=0o711)
        with job_lock(self.lock_path, '%s restore drill' % self.kind, wait=lock_timeout):
            leftovers = self.clean_up()
            durable.ensure_dir(self.root, mode=0o711)
            self.record = dict(kind=self.kind, dirs=[], processes=[],
                               started=naming.format_timestamp())
            try:
                yield leftovers
            finally:
                self.clean_up()

    def _save(self):
        durable.atomic_write_json(self.record_path, self.record)

    def new_dir(self, label, owner=None):
        """A fresh directory below the kind's root, recorded before it is created."""
        naming.validate_name('label', label)
        path = os.path.join(self.root, '%s-%s' % (label, binascii.hexlify(os.urandom(6)).decode()))
        self.record['dirs'].append(path)
        self._save()
        os.mkdir(path, 0o700)
        if owner is not None:
            os.chown(path, owner[0], owner[1])
        return path

    def started(self, pid, program, needle):
        """Record a server this run started (``needle``: its data or socket directory, which
        its command line names)."""
        self.record['processes'].append(dict(pid=pid, start_time=proc_start_time(pid),
                                             program=program, needle=needle))
        self._save()

    def stop(self, pid, grace=30):
        """Stop a recorded server of this run: SIGINT (PostgreSQL's fast shutdown; Redis
        exits too), SIGKILL after ``grace`` seconds."""
        for entry in self.record['processes']:
            if entry['pid'] == pid:
                return stop_recorded_process(pid, entry['start_time'], entry['program'],
                                             entry['needle'], grace, first_signal=signal.SIGINT)
        return False

    def _ours(self, path):
        return isinstance(path, str) and os.path.dirname(path) == self.root \
            and not os.path.islink(path)

    def clean_up(self):
        """Stop the servers and remove the directories the record names; then the record.
        Returns what was done (empty when nothing was left)."""
        record = read_record(self.record_path)
        done = dict(stopped=[], removed=[])
        if os.path.isdir(self.root):
            # the scratch redis-server helper keeps its own record here
            redis = stop_leftover_scratch(self.root)
            if redis and redis.get('stopped'):
                done['stopped'].append(redis['pid'])
        if record is None:
            return done if done['stopped'] else {}
        for entry in record.get('processes') or []:
            if not isinstance(entry, dict) or not isinstance(entry.get('pid'), int) \
                    or entry['pid'] <= 1:
                continue
            if stop_recorded_process(entry['pid'], entry.get('start_time'),
                                     str(entry.get('program')), str(entry.get('needle')),
                                     30, first_signal=signal.SIGQUIT):
                done['stopped'].append(entry['pid'])
        for path in record.get('dirs') or []:
            if self._ours(path) and os.path.lexists(path):
                done['stopped'] += _stop_cluster_in(path)
                shutil.rmtree(path)
                done['removed'].append(path)
        if os.path.isdir(self.root):
            durable.fsync_dir(self.root)
        remove_record(self.record_path)
        return done
