# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore a snapshot into a Redis instance.

Everything that can be checked is checked before Redis stops. Restore stops Redis, keeps
the current data files aside, installs the snapshot, starts Redis and compares the key
count with the manifest. Redis loads the AOF and ignores ``dump.rdb`` when ``appendonly
yes``, so an RDB restored into such an instance is installed as the base of a fresh
multi-part AOF as well. A failed restore puts the previous files back."""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable, metrics, naming, process
from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError, BackupError
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock
from ansible_collections.codeb.backup.plugins.module_utils.redis.options import (
    AOF_TAR_DIR, ASIDE_PREFIX, DEFAULT_BACKUP_DIR, DEFAULT_INSTANCE, DEFAULT_TIMEOUT, LOCK_NAME,
    METRIC_KIND, POLL, validate_common,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.connection import (
    connect, persistence_info, server_layout, count_keys, pid_running, redis,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.checks import verify_artifact
from ansible_collections.codeb.backup.plugins.module_utils.redis.scratch import scratch_server
from ansible_collections.codeb.backup.plugins.module_utils.redis.store import (
    resolve_snapshot, mark_failed,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.reconcile import reconcile


class Control(object):
    """How to stop and start the instance: ``service_name`` (systemd), or ``stop_command`` /
    ``start_command`` argv lists, or ``SHUTDOWN NOSAVE`` plus ``start_command``."""

    def __init__(self, service_name=None, stop_command=None, start_command=None,
                 timeout=DEFAULT_TIMEOUT):
        self.service_name = service_name
        self.stop_command = _argv('stop_command', stop_command)
        self.start_command = _argv('start_command', start_command)
        self.timeout = timeout
        if service_name:
            naming.validate_name('service_name', service_name.replace('@', '-'))
        if not service_name and not self.start_command:
            raise BackupError('restore must be able to start Redis again: set service_name '
                              '(systemd unit) or start_command', param='start_command')

    def stop(self, client, conn, pid):
        if self.stop_command:
            process.run(self.stop_command, what='stop_command', timeout=self.timeout)
        elif self.service_name:
            process.run(['systemctl', 'stop', self.service_name], timeout=self.timeout)
        else:
            try:
                client.shutdown(nosave=True)
            except redis.exceptions.ConnectionError:
                pass
            except redis.exceptions.RedisError as exc:
                raise BackupError('SHUTDOWN NOSAVE was refused by Redis (%s); set '
                                  'stop_command or service_name' % exc, param='stop_command')
        deadline = time.monotonic() + self.timeout
        while _alive(conn, pid):
            if time.monotonic() >= deadline:
                raise BackupError('Redis did not stop within %s s' % self.timeout,
                                  param='stop_command')
            time.sleep(POLL)

    def start(self, conn):
        if self.start_command:
            process.run(self.start_command, what='start_command', timeout=self.timeout)
        else:
            process.run(['systemctl', 'start', self.service_name], timeout=self.timeout)
        deadline = time.monotonic() + self.timeout
        last = None
        while time.monotonic() < deadline:
            try:
                client = connect(conn)
                if not int(persistence_info(client).get('loading', 1)):
                    return client
            except BackupError as exc:
                if exc.param == 'login_password':
                    raise  # up but refusing our credentials: waiting will not help
                last = exc.msg
            except redis.exceptions.BusyLoadingError:
                pass
            time.sleep(POLL * 2)
        raise BackupError('Redis did not come back within %s s after start: %s'
                          % (self.timeout, last), param='timeout')


def _argv(param, value):
    if value in (None, '', []):
        return None
    if isinstance(value, str):
        value = shlex.split(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise BackupError('%s must be a command as a list of strings; got %r' % (param, value),
                          param=param)
    return list(value)


def _alive(conn, pid):
    if pid and pid_running(pid):
        return True
    try:
        connect(dict(conn, connect_timeout=1)).ping()
        return True
    except BackupError as exc:
        return exc.param == 'login_password'  # it answered, just not to us


def predict_restore(conn, backup_dir, snapshot='latest', snapshot_format=None, instance=DEFAULT_INSTANCE,
                    service_name=None, stop_command=None, start_command=None, data_dir=None,
                    timeout=DEFAULT_TIMEOUT):
    """Check mode: validate as a real run would, find the snapshot and verify its sha256
    (read-only), check Redis answers; change nothing."""
    validate_common(backup_dir, instance, timeout=timeout)
    Control(service_name, stop_command, start_command, timeout)
    entry = resolve_snapshot(backup_dir, snapshot, snapshot_format)
    if not data_dir:
        connect(conn)
    path = os.path.join(backup_dir, entry['file'])
    if not os.path.isfile(path) or durable.sha256_file(path) != entry['sha256']:
        raise BackupError('snapshot %s is missing or fails its checksum; refusing' % path,
                          param='snapshot')
    return dict(changed=True, snapshot=entry['file'], format=entry['kind'],
                expected_keys=entry.get('keys'), duration_seconds=0,
                size_bytes=entry['size_bytes'],
                msg='would stop Redis instance %s and restore %s (%s, sha256 checked)'
                    % (instance, entry['file'], entry['kind']))


def restore_snapshot(conn, backup_dir=DEFAULT_BACKUP_DIR, snapshot='latest', snapshot_format=None,
                     instance=DEFAULT_INSTANCE, service_name=None, stop_command=None,
                     start_command=None, data_dir=None, appendonly=None,
                     timeout=DEFAULT_TIMEOUT, metrics_dir=metrics.DEFAULT_TEXTFILE_DIR,
                     lock_timeout=60):
    """``state: restored``. Everything that can be checked is checked before Redis stops.
    A snapshot that fails its sha256 or the Redis check tool is marked
    ``failed_verification`` (so ``latest`` moves on to the previous one) and refused."""
    validate_common(backup_dir, instance, timeout=timeout)
    began = time.monotonic()
    control = Control(service_name, stop_command, start_command, timeout)
    entry = resolve_snapshot(backup_dir, snapshot, snapshot_format)
    with Job(METRIC_KIND['restore'], instance, metrics_dir,
             what='redis restore of %s into %s' % (entry['file'], instance)) as job:
        try:
            client = connect(conn)
            layout = server_layout(client, data_dir)
        except BackupError:
            if not data_dir:
                raise
            client, layout = None, dict(dir=data_dir, dbfilename='dump.rdb',
                                        appenddirname=AOF_TAR_DIR, appendfilename='appendonly.aof',
                                        appendonly=bool(appendonly), pid=None)
        if appendonly is not None:
            layout['appendonly'] = bool(appendonly)
        data = layout['dir']
        with job_lock(os.path.join(backup_dir, LOCK_NAME), 'redis_snapshot job in %s' % backup_dir,
                      wait=lock_timeout):
            reconcile(backup_dir, client, layout, instance)
            entry = resolve_snapshot(backup_dir, entry['file'])  # as it is now, under the lock
            extract = None
            try:
                try:
                    extract = verify_artifact(backup_dir, entry, work_dir=data)
                except ArtifactError as exc:
                    mark_failed(backup_dir, entry['file'], exc.msg)
                    raise ArtifactError('refusing to restore %s: %s. Redis was not touched; the '
                                        'snapshot is now marked failed_verification, pick another '
                                        '(codeb-backup redis-list)' % (entry['file'], exc.msg),
                                        param='snapshot', **exc.details)
                result = _swap_in(client, conn, control, layout, backup_dir, entry, extract)
            finally:
                if extract:
                    shutil.rmtree(extract, ignore_errors=True)
        job.size = entry['size_bytes']
    result.update(changed=True, snapshot=entry['file'], format=entry['kind'],
                  size_bytes=entry['size_bytes'], duration_seconds=round(time.monotonic() - began, 3))
    return result


def _swap_in(client, conn, control, layout, backup_dir, entry, extract):
    data = layout['dir']
    rdb_live = os.path.join(data, layout['dbfilename'])
    aof_live = os.path.join(data, layout['appenddirname'])
    owner = os.stat(data)
    aside = os.path.join(data, ASIDE_PREFIX + naming.format_timestamp().replace(':', ''))
    moved = []
    if client is not None:
        control.stop(client, conn, layout.get('pid'))
    try:
        os.makedirs(aside, mode=0o700)
        for live in (rdb_live, aof_live):
            if os.path.lexists(live):
                os.rename(live, os.path.join(aside, os.path.basename(live)))
                moved.append(live)
        durable.fsync_dir(data)
        _install(layout, backup_dir, entry, extract, rdb_live, aof_live, owner)
        new_client = control.start(conn)
        keys = count_keys(new_client)
        expected = entry.get('keys')
        problem = key_count_problem(entry, keys)
        if problem:
            raise BackupError('after restoring %s: the previous data files were put back'
                              % problem)
        return dict(keys=keys, expected_keys=expected, aside_dir=aside,
                    loaded_from='aof' if layout['appendonly'] else 'rdb')
    except BaseException as exc:
        _roll_back(conn, control, layout, aside, moved, rdb_live, aof_live)
        if isinstance(exc, BackupError):
            exc.msg = '%s (restore rolled back: previous data files are in place again)' % exc.msg
        raise


def key_count_problem(entry, keys):
    """None if ``keys`` (loaded from snapshot ``entry``) agrees with its manifest, else the
    problem: keys with an expiry recorded in the snapshot may have expired since."""
    expected = entry.get('keys')
    if expected is None:
        return None
    low = expected - int(entry.get('expires') or 0)
    if low <= keys <= expected:
        return None
    return '%s loaded %d keys, the manifest expects %s%s' % (
        entry['file'], keys, expected, ' (%d of them with an expiry)' % (expected - low)
        if expected != low else '')


def _install(layout, backup_dir, entry, extract, rdb_live, aof_live, owner):
    src = os.path.join(backup_dir, entry['file'])
    if entry['kind'] == 'rdb':
        _install_file(src, rdb_live, owner)
        if layout['appendonly']:
            # Redis loads the AOF, not dump.rdb, when appendonly is yes: make the RDB the
            # base of a fresh multi-part AOF so the restored data is what gets loaded.
            staging = tempfile.mkdtemp(prefix=durable.TEMP_PREFIX + 'aof-', dir=layout['dir'])
            base = layout['appendfilename'] + '.1.base.rdb'
            shutil.copyfile(src, os.path.join(staging, base))
            with open(os.path.join(staging, layout['appendfilename'] + '.manifest'), 'w') as fh:
                fh.write('file %s seq 1 type b\n' % base)
            _commit_dir(staging, aof_live, owner)
    else:
        manifests = [n for n in os.listdir(extract) if n.endswith('.manifest')]
        wanted = layout['appendfilename'] + '.manifest'
        if manifests[0] != wanted:
            os.rename(os.path.join(extract, manifests[0]), os.path.join(extract, wanted))
        if layout['appendonly']:
            _commit_dir(extract, aof_live, owner)
        else:
            # appendonly no loads dump.rdb only: let a scratch server load the AOF and SAVE.
            with scratch_server(os.path.dirname(extract), True, appenddirname=os.path.basename(extract),
                                appendfilename=layout['appendfilename'],
                                dbfilename=os.path.basename(extract) + '.rdb',
                                state_dir=backup_dir) as scratch:
                scratch.save()
            _install_file(extract + '.rdb', rdb_live, owner)
            durable.discard(extract + '.rdb')


def _install_file(src, final, owner):
    with durable.atomic_path(final, mode=0o660) as temp:
        shutil.copyfile(src, temp)
        os.chown(temp, owner.st_uid, owner.st_gid)


def _commit_dir(staging, final, owner):
    for root, _dirs, files in os.walk(staging):
        for name in files:
            os.chown(os.path.join(root, name), owner.st_uid, owner.st_gid)
    os.chown(staging, owner.st_uid, owner.st_gid)
    durable.commit(staging, final, mode=0o660, dir_mode=0o750)


def _roll_back(conn, control, layout, aside, moved, rdb_live, aof_live):
    if _alive(conn, None):
        try:
            control.stop(connect(conn), conn, None)
        except BackupError:
            pass
    for live in (rdb_live, aof_live):
        if os.path.lexists(live) and live not in moved:
            durable.discard(live)
    for live in moved:
        durable.discard(live)
        os.rename(os.path.join(aside, os.path.basename(live)), live)
    durable.fsync_dir(layout['dir'])
    if not os.listdir(aside):
        os.rmdir(aside)
    control.start(conn)
