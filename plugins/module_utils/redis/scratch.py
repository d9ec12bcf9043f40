# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A private ``redis-server`` on a unix socket (to load and count an AOF snapshot, or
to turn an AOF into an RDB), whose pid and directory are recorded so the next run stops
one a killed run left behind."""

from __future__ import annotations

import binascii
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable, process
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.redis.options import (
    AOF_TAR_DIR, DEFAULT_TIMEOUT, POLL, SCRATCH_PREFIX, SCRATCH_RECORD,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.connection import (
    no_retry, persistence_info, proc_start_time, proc_cmdline, pid_running, redis,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.checks import tail


def _scratch_dir_ok(path):
    """Only a directory this module creates may be removed on a record's word."""
    tmp = os.path.realpath(tempfile.gettempdir())
    return (isinstance(path, str) and os.path.dirname(path) == tmp
            and os.path.basename(path).startswith(SCRATCH_PREFIX)
            and not os.path.islink(path))


def stop_leftover_scratch(state_dir, timeout=30):
    """Under the job's lock: stop the scratch redis-server a killed run left (recorded in
    ``state_dir``) and remove its directory. The pid is killed only if it is still that
    process: same start time and its command line names the recorded socket."""
    record_path = os.path.join(state_dir, SCRATCH_RECORD)
    record = read_record(record_path)
    if record is None:
        return None
    report = dict(pid=None, stopped=False, removed_dir=None)
    pid, sock = record.get('pid'), record.get('socket')
    if isinstance(pid, int) and pid > 1 and isinstance(sock, str) and sock:
        report['pid'] = pid
        report['stopped'] = stop_recorded_process(pid, record.get('start_time'), 'redis-server',
                                                  sock, timeout)
    sock_dir = record.get('dir')
    if _scratch_dir_ok(sock_dir) and os.path.isdir(sock_dir):
        shutil.rmtree(sock_dir, ignore_errors=True)
        report['removed_dir'] = sock_dir
    remove_record(record_path)
    return report


def stop_recorded_process(pid, start_time, program, needle, timeout=30, first_signal=9):
    """SIGKILL (or ``first_signal``, then SIGKILL at ``timeout``) the process ``pid`` a
    killed run recorded, only if it is still that process: the recorded start time, and a
    command line naming ``program`` and ``needle`` (its socket or directory). Returns True
    if it was stopped, False if it was gone or another process has that pid now."""
    started = proc_start_time(pid)
    cmdline = proc_cmdline(pid)
    if started is None or started != start_time or program not in cmdline or needle not in cmdline:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first_signal)
    deadline = time.monotonic() + timeout
    while proc_start_time(pid) == started and pid_running(pid):
        if time.monotonic() >= deadline:
            if first_signal != 9:
                first_signal = 9
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
                deadline = time.monotonic() + timeout
                continue
            raise BackupError('the scratch %s (pid %d) a killed run left did not stop within '
                              '%s s' % (program, pid, timeout))
        time.sleep(POLL)
    return True


def read_record(path):
    """An undo record a run left: its dict, ``{}`` when it is damaged (still to be
    cleaned up), None when there is none."""
    try:
        with open(path) as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def remove_record(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    durable.fsync_dir(os.path.dirname(path))


@contextlib.contextmanager
def scratch_server(data_dir, appendonly, timeout=DEFAULT_TIMEOUT, dbfilename='dump.rdb',
                   appenddirname=AOF_TAR_DIR, appendfilename='appendonly.aof', state_dir=None):
    """A private redis-server on a unix socket only, loading the files in ``data_dir``;
    yields a client once loading finished. Used to count an AOF snapshot's keys.

    Its life is tied to the run: it gets SIGKILL when the run dies (PR_SET_PDEATHSIG), and
    with ``state_dir`` (the job's directory, lock held) its pid and directory are recorded
    there first, so the next run stops a leftover (``stop_leftover_scratch``)."""
    # named and recorded before it exists, so a run killed at any point leaves a record
    # of everything it created
    sock_dir = os.path.join(os.path.realpath(tempfile.gettempdir()),
                            SCRATCH_PREFIX + binascii.hexlify(os.urandom(8)).decode())
    sock = os.path.join(sock_dir, 'redis.sock')
    record_path = os.path.join(state_dir, SCRATCH_RECORD) if state_dir else None
    argv = [shutil.which('redis-server') or '/usr/bin/redis-server', '--port', '0',
            '--unixsocket', sock, '--unixsocketperm', '700', '--dir', data_dir,
            '--dbfilename', dbfilename, '--appendonly', 'yes' if appendonly else 'no',
            '--appenddirname', appenddirname, '--appendfilename', appendfilename,
            '--save', '', '--auto-aof-rewrite-percentage', '0', '--daemonize', 'no',
            '--logfile', os.path.join(sock_dir, 'redis.log'), '--protected-mode', 'yes']
    proc = None
    try:
        if record_path:
            durable.atomic_write_json(record_path, dict(dir=sock_dir, socket=sock, pid=None))
        os.mkdir(sock_dir, 0o700)
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    preexec_fn=process.die_with_parent)
        except OSError as exc:
            raise BackupError('cannot start a scratch redis-server to verify the snapshot (%s); '
                              'install redis-server or set verify_load=false' % exc,
                              param='verify_load')
        if record_path:
            durable.atomic_write_json(record_path, dict(
                dir=sock_dir, socket=sock, pid=proc.pid, start_time=proc_start_time(proc.pid)))
        client = redis.Redis(unix_socket_path=sock, socket_timeout=60, **no_retry())
        client.codeb_where = 'scratch server'
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise BackupError('the scratch redis-server could not load the snapshot: %s'
                                  % tail(_read(os.path.join(sock_dir, 'redis.log'))))
            try:
                if not int(persistence_info(client).get('loading', 1)):
                    break
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                pass
            if time.monotonic() >= deadline:
                raise BackupError('the scratch redis-server did not finish loading within %s s'
                                  % timeout, param='timeout')
            time.sleep(POLL)
        yield client
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(sock_dir, ignore_errors=True)
        if record_path:
            with contextlib.suppress(OSError):
                remove_record(record_path)


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ''
