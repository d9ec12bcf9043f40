# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis 7 snapshots that are always fresh and always whole, and their restore.

RDB: ``BGSAVE SCHEDULE`` (waits behind a running save or AOF rewrite instead of failing),
then poll ``INFO persistence`` until a save counted *after* the request has finished with
``rdb_last_bgsave_status:ok`` and ``rdb_last_save_time`` not older than the request. Only
then is the file copied (the seed's ``BGSAVE; sleep 5; cp`` copies whatever file is there).
The copy is written under a temporary name, checked with ``redis-check-rdb`` and only then
renamed to ``dump-{YYYY-MM-DDTHH:MM:SS}.rdb``.

AOF: Redis 7 keeps a multi-part AOF (``appendonlydir/`` with ``appendonly.aof.manifest``).
Automatic rewrites are paused (``auto-aof-rewrite-percentage 0``, restored afterwards even
on failure), the manifest and exactly the files it names are copied as one set, the set is
checked with ``redis-check-aof`` and (by default) loaded into a scratch ``redis-server`` to
count its keys, then stored as one tar file ``appendonly-{YYYY-MM-DDTHH:MM:SS}.aof.tar``.

Restore stops Redis, keeps the current data files aside, installs the snapshot, starts
Redis and compares the key count with the manifest. Redis loads the AOF and ignores
``dump.rdb`` when ``appendonly yes``, so an RDB restored into such an instance is installed
as the base of a fresh multi-part AOF as well. A failed restore puts the previous files back.
"""

from __future__ import annotations

import binascii
import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable, metrics, naming
from ansible_collections.codeb.backup.plugins.module_utils import process, retention, ship
from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError, BackupError
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest as _Manifest

try:
    import redis
    HAS_REDIS = True
except ImportError:  # pragma: no cover - reported by connect()
    redis = None
    HAS_REDIS = False

DEFAULT_BACKUP_DIR = '/opt/codeb/db-backup/redis'
DEFAULT_INSTANCE = 'redis'
FORMATS = ('rdb', 'aof')
RDB_PREFIX, RDB_SUFFIX = 'dump-', '.rdb'
AOF_PREFIX, AOF_SUFFIX = 'appendonly-', '.aof.tar'
POINTERS = {'rdb': 'current.rdb', 'aof': 'current.aof'}
AOF_TAR_DIR = 'appendonlydir'
LOCK_NAME = '.redis_snapshot.lock'
ASIDE_PREFIX = 'codeb-restore-aside-'
METRIC_KIND = {'rdb': 'redis_rdb', 'aof': 'redis_aof', 'restore': 'redis_restore',
               'ship': 'redis_ship', 'verify': 'redis_verify'}
# Records a run keeps under backup_dir (written durably, under the lock) so the next run can
# undo what a killed one left: the live auto-aof-rewrite-percentage it changed, the scratch
# redis-server it started.
REWRITE_RECORD = '.redis-aof-rewrite.json'
SCRATCH_RECORD = '.redis-scratch.json'
SCRATCH_PREFIX = 'codeb-redis-scratch-'
STATUSES = ('ok', 'failed_verification', 'deleting')
SHIP_CHANNEL = 'redis_snapshot'
DEFAULT_TIMEOUT = 600
DEFAULT_KEEP_MIN = 3
DEFAULT_RDB_MAX_AGE_HOURS = 24
DEFAULT_AOF_KEEP = 1
_POLL = 0.05
_SAVE_POLL = 0.01  # INFO persistence while a BGSAVE runs: cheap, and every tick is wall time

CONNECTION_DEFAULTS = dict(login_host='127.0.0.1', login_port=6379, login_user=None,
                           login_password=None, login_unix_socket=None, tls=False,
                           validate_certs=True, ca_certs=None, connect_timeout=10.0)
CONNECTION_KEYS = ('login_host', 'login_port', 'login_user', 'login_password',
                   'login_unix_socket', 'tls', 'validate_certs', 'ca_certs')


def connection_argument_spec():
    """The modules' argument_spec entries for the connection options (documented by the
    doc fragment codeb.backup.redis)."""
    return dict(
        login_host=dict(type='str', default='127.0.0.1'),
        login_port=dict(type='int', default=6379),
        login_user=dict(type='str'),
        login_password=dict(type='str', no_log=True),
        login_unix_socket=dict(type='path'),
        tls=dict(type='bool', default=False),
        validate_certs=dict(type='bool', default=True),
        ca_certs=dict(type='path'),
    )


def connection_params(params):
    """The connection options out of a module's (or the CLI's) parameters."""
    return dict((key, params[key]) for key in CONNECTION_KEYS)


# Settings the role manages; which of them need a restart instead of CONFIG SET.
PERSISTENCE_SETTINGS = ('appendonly', 'appendfsync', 'auto-aof-rewrite-percentage',
                        'auto-aof-rewrite-min-size', 'aof-use-rdb-preamble', 'save', 'dir',
                        'dbfilename', 'appenddirname', 'appendfilename')
RESTART_ONLY = ('appenddirname', 'appendfilename', 'dir')
_MEMORY_SETTINGS = ('auto-aof-rewrite-min-size',)


# --------------------------------------------------------------------------- connection

def connect(conn):
    """A ``redis.Redis`` client for ``conn`` (CONNECTION_DEFAULTS keys) that answered PING."""
    if not HAS_REDIS:
        raise BackupError('the python "redis" client is not installed on this host '
                          '(Debian: apt install python3-redis)')
    conn = dict(CONNECTION_DEFAULTS, **{k: v for k, v in conn.items() if v is not None})
    kwargs = dict(username=conn['login_user'] or None, password=conn['login_password'] or None,
                  socket_timeout=60, socket_connect_timeout=float(conn['connect_timeout']),
                  **_no_retry())
    if conn['login_unix_socket']:
        kwargs['unix_socket_path'] = conn['login_unix_socket']
        where, param = 'unix socket %s' % conn['login_unix_socket'], 'login_unix_socket'
    else:
        kwargs.update(host=conn['login_host'], port=int(conn['login_port']))
        where, param = '%s:%s' % (conn['login_host'], conn['login_port']), 'login_host'
        if conn['tls']:
            kwargs.update(ssl=True, ssl_ca_certs=conn['ca_certs'],
                          ssl_cert_reqs='required' if conn['validate_certs'] else 'none')
    client = redis.Redis(**kwargs)
    try:
        client.ping()
    except redis.exceptions.AuthenticationError as exc:
        raise BackupError('Redis at %s refused the credentials (%s); check login_user and '
                          'login_password' % (where, exc), param='login_password')
    except redis.exceptions.ResponseError as exc:
        if 'NOAUTH' in str(exc) or 'WRONGPASS' in str(exc):
            raise BackupError('Redis at %s needs valid credentials (%s); set login_password'
                              % (where, exc), param='login_password')
        raise BackupError('Redis at %s answered PING with an error: %s' % (where, exc))
    except redis.exceptions.ConnectionError as exc:
        raise BackupError('cannot reach Redis at %s: %s. Is it running, and are %s / '
                          'login_port right?' % (where, exc, param), param=param)
    client.codeb_where = where
    return client


def _no_retry():
    """Fail fast: redis-py >= 5 retries a refused connection with backoff by default,
    which hides a stopped server for seconds."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    return dict(retry=Retry(NoBackoff(), 0))


def _info(client):
    return client.info('persistence')


def _wait(client, ready, timeout, what, on_poll=None, interval=None):
    """Poll INFO persistence until ``ready(info)``; return that info. ``on_poll()`` runs
    between the round trips."""
    deadline = time.monotonic() + timeout
    while True:
        info = _info(client)
        if ready(info):
            return info
        if time.monotonic() >= deadline:
            raise BackupError('timed out after %s s waiting for %s on Redis at %s; raise '
                              'timeout if the dataset is large' % (timeout, what, client.codeb_where),
                              param='timeout')
        if on_poll is not None:
            on_poll()
        time.sleep(_POLL if interval is None else interval)


def server_layout(client, data_dir=None):
    """Where the instance keeps its files, from CONFIG GET (``data_dir`` overrides ``dir``)."""
    layout = {}
    try:
        for key in ('dir', 'dbfilename', 'appendonly', 'appenddirname', 'appendfilename',
                    'auto-aof-rewrite-percentage'):
            layout.update(_decode_map(client.config_get(key)))
    except redis.exceptions.ResponseError as exc:
        raise BackupError('CONFIG GET failed on Redis at %s (%s): the backup needs CONFIG; '
                          'grant it to login_user or do not rename it' % (client.codeb_where, exc),
                          param='login_user')
    if data_dir:
        layout['dir'] = data_dir
    layout['appendonly'] = layout.get('appendonly') == 'yes'
    server = client.info('server')
    layout['redis_version'] = server.get('redis_version')
    layout['pid'] = server.get('process_id')
    return layout


def _decode_map(value):
    return {_text(k): _text(v) for k, v in value.items()}


def _text(value):
    return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)


def count_keys(client):
    total = 0
    for name, stats in client.info('keyspace').items():
        if str(name).startswith('db') and isinstance(stats, dict):
            total += int(stats.get('keys', 0))
    return total


# --------------------------------------------------------------------------- manifest

_SHA_RE = re.compile(r'\A[0-9a-f]{64}\Z')


class Manifest(_Manifest):
    """The snapshot manifest. Every entry is input: besides the plain file name the shared
    manifest checks, an entry must be a snapshot of its kind with a sha256, a size and a
    known status, or the whole manifest is refused (naming it) before anything is opened,
    renamed or deleted."""

    def load(self):
        entries = super().load()
        for name, entry in entries.items():
            problem = _entry_problem(name, entry)
            if problem:
                raise BackupError(
                    'manifest %s holds an entry that is not a Redis snapshot of %s (%r: %s); '
                    'nothing was changed. Inspect the manifest: it may have been tampered with.'
                    % (self.path, self.directory, name, problem), param='manifest')
        return entries


def _entry_problem(name, entry):
    kind = entry.get('kind')
    if kind not in FORMATS:
        return 'kind must be rdb or aof, not %r' % (kind,)
    if not isinstance(name, str) or not _ARTIFACT_RE[kind].match(name):
        return 'not a %s snapshot file name' % kind
    try:
        naming.parse_timestamp('time', entry.get('time'))
    except BackupError:
        return 'time %r is not a UTC timestamp' % (entry.get('time'),)
    if not isinstance(entry.get('sha256'), str) or not _SHA_RE.match(entry['sha256']):
        return 'sha256 must be 64 hex digits, not %r' % (entry.get('sha256'),)
    size = entry.get('size_bytes')
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return 'size_bytes must be a non-negative integer, not %r' % (size,)
    for field in ('keys', 'expires'):
        value = entry.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return '%s must be an integer, not %r' % (field, value)
    if entry.get('status', 'ok') not in STATUSES:
        return 'status must be one of %s, not %r' % (', '.join(STATUSES), entry.get('status'))
    return None


# --------------------------------------------------------------------------- checks
#
# Only an ArtifactError says a snapshot is bad: its sha256 or size differs from the
# manifest, or redis-check-rdb / redis-check-aof ran and rejected it. A missing tool, a
# tool killed by a signal, an unreadable file or a full scratch disk is a BackupError: the
# run fails and no snapshot's status changes.

_KEYS_RE = re.compile(r'\[info\] (\d+) keys read')
_EXPIRES_RE = re.compile(r'\[info\] (\d+) expires')
_RDB_ERROR = '--- RDB ERROR DETECTED ---'
_TOOLS_HINT = 'install it (Debian: apt install redis-tools) or put it on PATH'


def _run_check(argv, what, input_data=None):
    try:
        proc = process.run(argv, what=what, check=False, input_data=input_data)
    except BackupError as exc:
        raise BackupError('%s: %s; nothing was checked, and no snapshot\'s status was changed'
                          % (exc.msg, _TOOLS_HINT), param='snapshot', tool=argv[0])
    return proc, (proc.stdout or '') + (proc.stderr or '')


def check_rdb(path, name=None):
    """Run redis-check-rdb on ``path``; return ``(keys, expires)``. Raise ArtifactError if
    the tool rejects the file, BackupError if it could not check it."""
    name = name or path
    proc, out = _run_check(['redis-check-rdb', path], 'redis-check-rdb')
    if proc.returncode == 0 and 'RDB looks OK' in out:
        keys = _KEYS_RE.search(out)
        expires = _EXPIRES_RE.search(out)
        return int(keys.group(1)) if keys else 0, int(expires.group(1)) if expires else 0
    if proc.returncode > 0 and _RDB_ERROR in out:
        raise ArtifactError('redis-check-rdb refused %s: %s' % (name, _tail(out)),
                            param='snapshot', check_output=_tail(out))
    raise BackupError('redis-check-rdb could not check %s (exit %s): %s; this says nothing '
                      'about the snapshot, whose status is unchanged'
                      % (name, proc.returncode, _tail(out) or 'no output'), param='snapshot',
                      check_output=_tail(out))


def _aof_invalid(out):
    return 'not valid' in out or 'is not valid' in out


def check_aof(manifest_path, fix_truncated_tail=False, name=None):
    """Run redis-check-aof on a multi-part AOF manifest. A copy of a live AOF may end in
    the middle of the last command of the last INCR file; with ``fix_truncated_tail`` that
    tail (and only that) is cut off, as Redis itself does with ``aof-load-truncated yes``.
    Returns a note if a tail was cut. Raises ArtifactError if the tool rejects the set."""
    name = name or manifest_path
    directory = os.path.dirname(manifest_path)
    _data, names = read_aof_manifest(manifest_path, artifact=name)
    missing = [n for n in names if not os.path.isfile(os.path.join(directory, n))]
    if missing:
        raise ArtifactError('%s is incomplete: its AOF manifest names %s, which it does not hold'
                            % (name, ', '.join(missing)), param='snapshot')
    proc, out = _run_check(['redis-check-aof', manifest_path], 'redis-check-aof')
    if proc.returncode == 0 and 'valid' in out and not _aof_invalid(out):
        return None
    if proc.returncode > 0 and fix_truncated_tail and 'truncated' in out.lower():
        fixed, _out = _run_check(['redis-check-aof', '--fix', manifest_path],
                                 'redis-check-aof --fix', input_data='y\n')
        again, _out = _run_check(['redis-check-aof', manifest_path], 'redis-check-aof')
        if again.returncode == 0:
            return 'cut a truncated last command from the copied INCR file: %s' % _tail(
                fixed.stdout, 300)
    if proc.returncode > 0 and (_aof_invalid(out) or 'truncated' in out.lower()):
        raise ArtifactError('redis-check-aof refused %s: %s' % (name, _tail(out)),
                            param='snapshot', check_output=_tail(out))
    raise BackupError('redis-check-aof could not check %s (exit %s): %s; this says nothing '
                      'about the snapshot, whose status is unchanged'
                      % (name, proc.returncode, _tail(out) or 'no output'), param='snapshot',
                      check_output=_tail(out))


def _tail(text, limit=1500):
    return (text or '').strip()[-limit:]


def _proc_start_time(pid):
    try:
        with open('/proc/%d/stat' % int(pid)) as handle:
            return int(handle.read().rsplit(')', 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _proc_cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % int(pid), 'rb') as handle:
            return handle.read().decode('utf-8', 'replace')
    except (OSError, ValueError):
        return ''


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
    record = _read_record(record_path)
    if record is None:
        return None
    report = dict(pid=None, stopped=False, removed_dir=None)
    pid, sock = record.get('pid'), record.get('socket')
    if isinstance(pid, int) and pid > 1 and isinstance(sock, str) and sock:
        report['pid'] = pid
        started = _proc_start_time(pid)
        if (started is not None and started == record.get('start_time')
                and 'redis-server' in _proc_cmdline(pid) and sock in _proc_cmdline(pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            deadline = time.monotonic() + timeout
            while _proc_start_time(pid) == started and _pid_running(pid):
                if time.monotonic() >= deadline:
                    raise BackupError('the scratch redis-server (pid %d) a killed run left did '
                                      'not stop within %s s' % (pid, timeout))
                time.sleep(_POLL)
            report['stopped'] = True
    sock_dir = record.get('dir')
    if _scratch_dir_ok(sock_dir) and os.path.isdir(sock_dir):
        shutil.rmtree(sock_dir, ignore_errors=True)
        report['removed_dir'] = sock_dir
    _remove_record(record_path)
    return report


def _read_record(path):
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


def _remove_record(path):
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
                dir=sock_dir, socket=sock, pid=proc.pid, start_time=_proc_start_time(proc.pid)))
        client = redis.Redis(unix_socket_path=sock, socket_timeout=60, **_no_retry())
        client.codeb_where = 'scratch server'
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise BackupError('the scratch redis-server could not load the snapshot: %s'
                                  % _tail(_read(os.path.join(sock_dir, 'redis.log'))))
            try:
                if not int(_info(client).get('loading', 1)):
                    break
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                pass
            if time.monotonic() >= deadline:
                raise BackupError('the scratch redis-server did not finish loading within %s s'
                                  % timeout, param='timeout')
            time.sleep(_POLL)
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
                _remove_record(record_path)


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ''


# --------------------------------------------------------------------------- snapshot

_TS = naming.TIMESTAMP_PATTERN
_SNAPSHOT_RE = re.compile(r'\A(?:%s%s%s|%s%s%s|%s)\Z' % (
    re.escape(RDB_PREFIX), _TS, re.escape(RDB_SUFFIX), re.escape(AOF_PREFIX), _TS,
    re.escape(AOF_SUFFIX), _TS))


_ARTIFACT_RE = {
    'rdb': re.compile(r'\A%s(%s)%s\Z' % (re.escape(RDB_PREFIX), _TS, re.escape(RDB_SUFFIX))),
    'aof': re.compile(r'\A%s(%s)%s\Z' % (re.escape(AOF_PREFIX), _TS, re.escape(AOF_SUFFIX))),
}


def artifact_kind(name):
    """``(kind, stamp)`` if ``name`` is a snapshot file name, else ``(None, None)``."""
    for kind, pattern in _ARTIFACT_RE.items():
        match = pattern.match(name)
        if match:
            return kind, match.group(1)
    return None, None


def validate_snapshot_name(param, value):
    """A snapshot is named by its file name or its UTC timestamp, nothing else (so it can
    never name a path outside the backup directory)."""
    if not isinstance(value, str) or not _SNAPSHOT_RE.match(value):
        raise BackupError('%s must be latest, a snapshot file name like '
                          'dump-2026-01-07T10:00:00.rdb or appendonly-2026-01-07T10:00:00.aof.tar, '
                          'or a timestamp like 2026-01-07T10:00:00; got %r' % (param, value),
                          param=param)
    return value


def artifact_name(kind, stamp):
    if kind == 'rdb':
        return '%s%s%s' % (RDB_PREFIX, stamp, RDB_SUFFIX)
    return '%s%s%s' % (AOF_PREFIX, stamp, AOF_SUFFIX)


def _copy_open_file(source, target_path):
    """Copy an open file object to ``target_path``; return ``(sha256, size)``."""
    import hashlib
    digest = hashlib.sha256()
    size = 0
    with open(target_path, 'wb') as target:
        for chunk in iter(lambda: source.read(durable.CHUNK), b''):
            digest.update(chunk)
            size += len(chunk)
            target.write(chunk)
    return digest.hexdigest(), size


def bgsave_fresh(client, timeout=DEFAULT_TIMEOUT, watcher=None):
    """Make Redis write an RDB that contains every write acknowledged before this call.

    Returns ``(server_time_requested, info_after, saves_before, retried)``. A save already
    running started before the request, so it is waited for and then ours is requested;
    ``BGSAVE SCHEDULE`` queues behind a running AOF rewrite instead of failing.
    ``watcher`` (optional) is armed just before the request and polled while the save runs
    (see ``_EarlyCopy``)."""
    _wait(client, lambda i: not int(i['rdb_bgsave_in_progress']), timeout,
          'a running background save to finish')
    requested = int(client.time()[0])
    baseline = _info(client)
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
                _wait(client, lambda i: not int(i['rdb_bgsave_in_progress']),
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

    info = _wait(client, done, max(1.0, timeout - (time.monotonic() - started)),
                 'BGSAVE to finish', on_poll=watcher.poll if watcher else None,
                 interval=_SAVE_POLL)
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
            self.copied['result'] = _copy_open_file(self.source, self.temp)
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
                sha, size = _copy_open_file(source, temp)
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


def read_aof_manifest(path, artifact=None):
    """Parse a Redis 7 AOF manifest; return ``(bytes, [file names])``. With ``artifact``
    (the snapshot it came from) a bad manifest is evidence against that snapshot."""
    error = ArtifactError if artifact else BackupError
    where = '%s (in %s)' % (os.path.basename(path), artifact) if artifact else path
    with open(path, 'rb') as handle:
        data = handle.read()
    names = []
    for line in data.decode('utf-8', 'replace').splitlines():
        fields = line.split()
        if not fields:
            continue
        pairs = dict(zip(fields[0::2], fields[1::2]))
        name = pairs.get('file')
        if not name or '/' in name or name in ('.', '..'):
            raise error('unexpected line in AOF manifest %s: %r' % (where, line),
                        param='snapshot' if artifact else None)
        names.append(name)
    if not names:
        raise error('AOF manifest %s names no files' % where,
                    param='snapshot' if artifact else None)
    return data, names


def _rewrite_percentage(client):
    try:
        return _decode_map(client.config_get('auto-aof-rewrite-percentage'))[
            'auto-aof-rewrite-percentage']
    except (redis.exceptions.RedisError, KeyError) as exc:
        raise BackupError('CONFIG GET auto-aof-rewrite-percentage failed on Redis at %s (%s)'
                          % (client.codeb_where, exc), param='login_user')


def _run_id(client):
    return client.info('server').get('run_id')


def restore_rewrite_setting(client, backup_dir):
    """Under the job's lock: if a killed AOF snapshot left ``auto-aof-rewrite-percentage``
    at 0, put back the original value it recorded, then drop the record. Returns
    ``dict(restored=VALUE)`` / ``dict(dropped=reason)`` or None (no record)."""
    record_path = os.path.join(backup_dir, REWRITE_RECORD)
    record = _read_record(record_path)
    if record is None:
        return None
    if not re.match(r'\A\d+\Z', str(record.get('original', ''))):
        _remove_record(record_path)
        return dict(dropped='unreadable record %s' % record_path)
    original = str(record['original'])
    if record.get('run_id') and record['run_id'] != _run_id(client):
        # Redis restarted since: it read its setting from its config file again
        _remove_record(record_path)
        return dict(dropped='Redis restarted since the record was written')
    if _rewrite_percentage(client) == '0' and original != '0':
        try:
            client.config_set('auto-aof-rewrite-percentage', original)
        except redis.exceptions.RedisError as exc:
            raise BackupError('could not put auto-aof-rewrite-percentage back to %s on %s (%s), '
                              'which a killed snapshot left at 0: set it by hand'
                              % (original, client.codeb_where, exc))
        _remove_record(record_path)
        return dict(restored=original)
    _remove_record(record_path)
    return dict(dropped='the live value is not 0')


@contextlib.contextmanager
def rewrites_paused(client, backup_dir):
    """Pause automatic AOF rewrites for the block. The original value is recorded durably
    in ``backup_dir`` *before* it is changed, so a run killed inside the block leaves the
    next run (``restore_rewrite_setting``) what to put back; the record goes once the value
    is back."""
    record_path = os.path.join(backup_dir, REWRITE_RECORD)
    original = _rewrite_percentage(client)
    durable.atomic_write_json(record_path, dict(original=original, run_id=_run_id(client),
                                                where=client.codeb_where,
                                                time=naming.format_timestamp()))
    try:
        client.config_set('auto-aof-rewrite-percentage', 0)
        yield original
    finally:
        try:
            client.config_set('auto-aof-rewrite-percentage', original)
        except redis.exceptions.RedisError as exc:
            raise BackupError('could not restore auto-aof-rewrite-percentage to %s on %s '
                              '(%s): set it by hand' % (original, client.codeb_where, exc))
        _remove_record(record_path)


def snapshot_aof(client, layout, backup_dir, stamp, timeout=DEFAULT_TIMEOUT, verify_load=True):
    """Copy the multi-part AOF as one consistent set; return the manifest entry."""
    began = time.monotonic()
    aof_dir = os.path.join(layout['dir'], layout['appenddirname'])
    manifest_name = layout['appendfilename'] + '.manifest'
    staging = tempfile.mkdtemp(prefix=durable.TEMP_PREFIX + 'aof-', dir=backup_dir)
    note = None
    try:
        with rewrites_paused(client, backup_dir):
            _wait(client, lambda i: not int(i['aof_rewrite_in_progress'])
                  and not int(i['aof_rewrite_scheduled']), timeout, 'the AOF rewrite to finish')
            names = _copy_aof_set(aof_dir, manifest_name, staging)
        try:
            note = check_aof(os.path.join(staging, manifest_name), fix_truncated_tail=True,
                             name='the copy of the live AOF')
        except ArtifactError as exc:
            # the copy, not a stored snapshot, is bad: the run fails, nothing is marked
            raise BackupError(exc.msg, **exc.details)
        keys = None
        if verify_load:
            with scratch_server(os.path.dirname(staging), True, timeout,
                                appenddirname=os.path.basename(staging),
                                appendfilename=layout['appendfilename'],
                                state_dir=backup_dir) as scratch:
                keys = count_keys(scratch)
            # the scratch server may have created an empty INCR file; keep the set as copied
            names_now = read_aof_manifest(os.path.join(staging, manifest_name))[1]
            for extra in set(os.listdir(staging)) - set(names_now) - {manifest_name}:
                os.unlink(os.path.join(staging, extra))
            names = names_now
        final = os.path.join(backup_dir, artifact_name('aof', stamp))
        with durable.atomic_path(final) as temp:
            with tarfile.open(temp, 'w') as tar:
                for name in [manifest_name] + names:
                    tar.add(os.path.join(staging, name), arcname='%s/%s' % (AOF_TAR_DIR, name),
                            recursive=False)
            sha, size = durable.sha256_file(temp), os.path.getsize(temp)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    entry = dict(file=os.path.basename(final), kind='aof', time=stamp, sha256=sha,
                 size_bytes=size, keys=keys, files=names, status='ok',
                 appendfilename=layout['appendfilename'],
                 duration_seconds=round(time.monotonic() - began, 3),
                 redis_version=layout.get('redis_version'))
    if note:
        entry['note'] = note
    return entry


def _copy_aof_set(aof_dir, manifest_name, staging, attempts=5):
    """Copy the manifest and the files it names; retry if a rewrite swapped the set."""
    manifest_path = os.path.join(aof_dir, manifest_name)
    for _attempt in range(attempts):
        try:
            data, names = read_aof_manifest(manifest_path)
        except FileNotFoundError:
            raise BackupError('no AOF manifest at %s: is appendonly on and this Redis 7?'
                              % manifest_path, param='formats')
        try:
            for name in names:
                shutil.copyfile(os.path.join(aof_dir, name), os.path.join(staging, name))
        except FileNotFoundError:
            _clear(staging)
            continue  # a rewrite removed a file of the old set: start over
        again = read_aof_manifest(manifest_path)[0]
        if again == data:
            with open(os.path.join(staging, manifest_name), 'wb') as handle:
                handle.write(data)
            return names
        _clear(staging)
    raise BackupError('the AOF set in %s kept changing while it was copied (%d attempts); is '
                      'someone running BGREWRITEAOF in a loop?' % (aof_dir, attempts))


def _clear(directory):
    for name in os.listdir(directory):
        durable.discard(os.path.join(directory, name))


def set_pointer(backup_dir, kind, file_name):
    """Point ``current.rdb`` / ``current.aof`` at ``file_name`` (a relative symlink),
    replacing the old pointer atomically."""
    final = os.path.join(backup_dir, POINTERS[kind])
    if os.path.islink(final) and os.readlink(final) == file_name:
        return False
    temp = os.path.join(backup_dir, '%s%s.%d' % (durable.TEMP_PREFIX, POINTERS[kind], os.getpid()))
    durable.discard(temp)
    os.symlink(file_name, temp)
    os.rename(temp, final)
    durable.fsync_dir(backup_dir)
    return True


def plan_prune(entries, now, keep_min=DEFAULT_KEEP_MIN, rdb_max_age_hours=DEFAULT_RDB_MAX_AGE_HOURS,
               aof_keep=DEFAULT_AOF_KEEP):
    """``(keep, delete)`` over both kinds: RDB older than ``rdb_max_age_hours`` (never the
    newest ``keep_min`` good ones); AOF only the newest ``aof_keep``."""
    rdb = [e for e in entries if e.get('kind') == 'rdb']
    aof = [e for e in entries if e.get('kind') == 'aof']
    keep_r, del_r = retention.plan_retention(
        rdb, now, max_age=datetime.timedelta(hours=int(rdb_max_age_hours)), keep_min=keep_min)
    if int(aof_keep) < 1:
        raise BackupError('aof_keep must be at least 1; got %r' % (aof_keep,), param='aof_keep')
    keep_a, del_a = retention.plan_retention(aof, now, keep_min=int(aof_keep),
                                             max_count=int(aof_keep))
    return keep_r + keep_a, del_r + del_a


def prune(backup_dir, now=None, keep_min=DEFAULT_KEEP_MIN,
          rdb_max_age_hours=DEFAULT_RDB_MAX_AGE_HOURS, aof_keep=DEFAULT_AOF_KEEP):
    """Apply retention in three durable steps: mark the entries ``status: deleting``, delete
    the files, drop the entries. A run killed in between leaves entries marked
    ``deleting`` (never counted as good, never restored or shipped) that ``reconcile``
    finishes. Returns the deleted names."""
    now = now or naming.utcnow()
    manifest = Manifest(backup_dir)
    deleted = []
    stamp = naming.format_timestamp()
    with manifest.update() as entries:
        _keep, delete = plan_prune([e for e in entries.values() if e.get('status') != 'deleting'],
                                   now, keep_min, rdb_max_age_hours, aof_keep)
        for entry in delete:
            entries[entry['file']].update(status='deleting', deleting_since=stamp,
                                          reason=entry.get('reason'))
            deleted.append(entry['file'])
    _finish_deletes(backup_dir, manifest, deleted)
    return deleted


def _finish_deletes(backup_dir, manifest, names):
    """Delete the files of entries marked ``deleting``, then drop those entries."""
    if not names:
        return
    for name in names:
        durable.discard(os.path.join(backup_dir, naming.validate_file_name('file', name)))
    durable.fsync_dir(backup_dir)
    with manifest.update() as entries:
        for name in names:
            if entries.get(name, {}).get('status') == 'deleting':
                entries.pop(name)


def _repair_pointers(backup_dir):
    """``current.*`` names the newest good snapshot of its kind (after adoption, pruning or a
    snapshot marked bad)."""
    changed = []
    good = [e for e in Manifest(backup_dir).entries() if retention.is_good(e)]
    for kind in FORMATS:
        of_kind = [e for e in good if e.get('kind') == kind]
        if of_kind and set_pointer(backup_dir, kind, of_kind[-1]['file']):
            changed.append(POINTERS[kind])
    return changed


def _adopt(backup_dir, name, work_dir, instance=None, redis_version=None):
    """A snapshot under its final name that no entry lists (a run killed between the
    rename and the manifest write): check it like a new one; return its entry. Raises
    ArtifactError if it fails its check (the caller removes it)."""
    path = os.path.join(backup_dir, name)
    kind, stamp = artifact_kind(name)
    sha, size = durable.sha256_file(path), os.path.getsize(path)
    entry = dict(file=name, kind=kind, time=stamp, sha256=sha, size_bytes=size, status='ok',
                 adopted=naming.format_timestamp())
    if kind == 'rdb':
        entry['keys'], entry['expires'] = check_rdb(path, name=path)
    else:
        extract = _check_aof_tar(path, work_dir)
        try:
            manifest_name = [n for n in os.listdir(extract) if n.endswith('.manifest')][0]
            entry.update(keys=None, appendfilename=manifest_name[:-len('.manifest')],
                         files=read_aof_manifest(os.path.join(extract, manifest_name),
                                                 artifact=path)[1])
        finally:
            shutil.rmtree(extract, ignore_errors=True)
    if instance:
        entry['instance'] = instance
    if redis_version:
        entry['redis_version'] = redis_version
    return entry


def _remove_restore_temps(layout):
    """What a killed restore left in Redis's data directory: its extracted AOF set, its
    staging dir, a temp of the installed dump.rdb (names only a restore writes there)."""
    data = layout['dir']
    prefixes = tuple(durable.TEMP_PREFIX + p for p in (
        'restore-', 'aof-', (layout.get('dbfilename') or 'dump.rdb') + '.'))
    removed = []
    for name in sorted(os.listdir(data)):
        if name.startswith(prefixes):
            durable.discard(os.path.join(data, name))
            removed.append(os.path.join(data, name))
    if removed:
        durable.fsync_dir(data)
    return removed


def reconcile(backup_dir, client=None, layout=None, instance=None):
    """Undo what killed or out-of-space runs left in ``backup_dir``; call under the job's
    lock, before anything else. In order: stop a leftover scratch redis-server and remove
    its directory; put back an ``auto-aof-rewrite-percentage`` a killed AOF snapshot left
    at 0 (needs ``client``); remove every temporary (``.tmp-*``: partial copies, AOF
    staging dirs, pointer and manifest temps; with ``layout`` also a killed restore's in
    Redis's data directory); finish deletes marked ``deleting``; adopt each whole snapshot no
    entry lists (or remove it if it fails its check); point ``current.*`` at the newest
    good snapshots. Only ArtifactError evidence removes a file; any other failure (a
    missing tool, a full disk) fails the run and leaves the file for the next one."""
    report = {}
    scratch = stop_leftover_scratch(backup_dir)
    if scratch:
        report['scratch_server'] = scratch
    if client is not None:
        rewrite = restore_rewrite_setting(client, backup_dir)
        if rewrite:
            report['aof_rewrite'] = rewrite
    removed = durable.remove_stale_temps(backup_dir)
    if layout and os.path.isdir(layout.get('dir') or ''):
        removed += _remove_restore_temps(layout)
    if removed:
        report['removed'] = removed
    manifest = Manifest(backup_dir)
    entries = manifest.load()
    deleting = sorted(n for n, e in entries.items() if e.get('status') == 'deleting')
    if deleting:
        _finish_deletes(backup_dir, manifest, deleting)
        report['finished_deletes'] = deleting
    unlisted = sorted(n for n in os.listdir(backup_dir) if artifact_kind(n)[0]
                      and n not in entries and not os.path.islink(os.path.join(backup_dir, n))
                      and os.path.isfile(os.path.join(backup_dir, n)))
    adopted, rejected = {}, []
    for name in unlisted:
        try:
            adopted[name] = _adopt(backup_dir, name, backup_dir, instance,
                                   (layout or {}).get('redis_version'))
        except ArtifactError as exc:
            durable.discard(os.path.join(backup_dir, name))
            durable.fsync_dir(backup_dir)
            rejected.append(dict(file=name, error=exc.msg))
    if adopted:
        with manifest.update() as current:
            for name, entry in adopted.items():
                current.setdefault(name, entry)
        report['adopted'] = sorted(adopted)
    if rejected:
        report['removed_damaged'] = rejected
    pointers = _repair_pointers(backup_dir)
    if pointers:
        report['pointers'] = pointers
    return report


class _Jobs(object):
    """One ``job.Job`` per snapshot kind of a run. A failure common to the run (Redis
    unreachable, the lock, reconcile, retention) fails every kind still open; a kind's own
    failure only that kind. Each job writes its metrics exactly once, with job.Job's policy,
    whatever the exception; ``close`` then raises the first error."""

    def __init__(self, kinds, instance, metrics_dir):
        self.jobs = {}
        for kind in kinds:
            job = Job(METRIC_KIND[kind], instance, metrics_dir,
                      what='redis %s snapshot of %s' % (kind, instance))
            job.__enter__()
            self.jobs[kind] = job
        self.failed = {}

    def drop(self, kind):
        self.jobs.pop(kind, None)

    def fail(self, kind, exc):
        self.failed.setdefault(kind, exc)

    def close(self, common=None, **details):
        errors = []
        for kind, job in self.jobs.items():
            exc = self.failed.get(kind, common)
            try:
                if exc is None:
                    job.__exit__(None, None, None)
                    continue
                if not job.__exit__(type(exc), exc, exc.__traceback__):
                    errors.append(exc if isinstance(exc, BackupError) else None)
            except BackupError as error:
                errors.append(error)
        if common is not None and not isinstance(common, Exception):
            raise common  # KeyboardInterrupt / SystemExit: recorded, passed on
        unique = []
        for error in errors:
            if error is not None and not any(error is seen for seen in unique):
                unique.append(error)
        errors = unique
        if errors:
            first = errors[0]
            for key, value in details.items():
                first.details.setdefault(key, value)
            if len(errors) > 1:
                first.details.setdefault('errors', [e.msg for e in errors])
            raise first


def _validate_common(backup_dir, instance, formats=None, timeout=None):
    naming.validate_name('instance', instance)
    if not isinstance(backup_dir, str) or not os.path.isabs(backup_dir):
        raise BackupError('backup_dir must be an absolute path; got %r' % (backup_dir,),
                          param='backup_dir')
    if os.path.normpath(backup_dir) != backup_dir.rstrip('/') or '..' in backup_dir.split('/'):
        raise BackupError('backup_dir must not contain "." or ".." components; got %r'
                          % backup_dir, param='backup_dir')
    if formats is not None:
        if not formats or any(f not in FORMATS for f in formats):
            raise BackupError('formats must be a non-empty list of %s; got %r'
                              % (', '.join(FORMATS), formats), param='formats')
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise BackupError('timeout must be a positive number of seconds; got %r' % (timeout,),
                          param='timeout')


def predict_snapshot(conn, backup_dir=DEFAULT_BACKUP_DIR, instance=DEFAULT_INSTANCE,
                     formats=FORMATS, data_dir=None, timeout=DEFAULT_TIMEOUT, **_ignored):
    """Check mode: validate, connect and read only; say what a run would write."""
    _validate_common(backup_dir, instance, formats, timeout)
    client = connect(conn)
    layout = server_layout(client, data_dir)
    stamp = naming.format_timestamp()
    would, skipped = [], {}
    for kind in formats:
        if kind == 'aof' and not layout['appendonly']:
            skipped['aof'] = 'appendonly is no on this instance'
            continue
        would.append(artifact_name(kind, stamp))
    return dict(changed=bool(would), would_write=[os.path.join(backup_dir, n) for n in would],
                skipped=skipped, backup_dir=backup_dir, appendonly=layout['appendonly'],
                keys=count_keys(client), duration_seconds=0, size_bytes=0)


def take_snapshot(conn, backup_dir=DEFAULT_BACKUP_DIR, instance=DEFAULT_INSTANCE, formats=FORMATS,
                  data_dir=None, timeout=DEFAULT_TIMEOUT, keep_min=DEFAULT_KEEP_MIN,
                  rdb_max_age_hours=DEFAULT_RDB_MAX_AGE_HOURS, aof_keep=DEFAULT_AOF_KEEP,
                  prune_old=True, verify_load=True, metrics_dir=metrics.DEFAULT_TEXTFILE_DIR,
                  lock_timeout=60):
    """``state: present``: RDB and/or AOF snapshots, pointers, retention, metrics.

    Each kind is one job (metrics ``redis_rdb`` / ``redis_aof``): a failure of one kind
    does not stop the other; a failure common to the run fails both."""
    _validate_common(backup_dir, instance, formats, timeout)
    if int(keep_min) < 1:
        raise BackupError('keep_min must be at least 1; got %r' % (keep_min,), param='keep_min')
    began = time.monotonic()
    jobs = _Jobs(formats, instance, metrics_dir)
    results, skipped, deleted, reconciled = [], {}, [], {}
    client = None
    common = None
    try:
        client = connect(conn)
        layout = server_layout(client, data_dir)
        durable.ensure_dir(backup_dir)
        with job_lock(os.path.join(backup_dir, LOCK_NAME), 'redis_snapshot into %s' % backup_dir,
                      wait=lock_timeout):
            reconciled = reconcile(backup_dir, client, layout, instance)
            manifest = Manifest(backup_dir)
            for kind in formats:
                if kind == 'aof' and not layout['appendonly']:
                    skipped['aof'] = 'appendonly is no on this instance'
                    jobs.drop('aof')
                    if metrics_dir:
                        # no AOF job here (RedisAOFDisabled covers that): drop a stale failure
                        # an earlier unreachable run recorded, so BackupFailed does not fire
                        durable.discard(metrics.metrics_path(metrics_dir, METRIC_KIND['aof'],
                                                             instance))
                    continue
                try:
                    entry = _snapshot_kind(client, layout, backup_dir, manifest, kind, instance,
                                           timeout, verify_load)
                except Exception as exc:
                    jobs.fail(kind, exc)
                    continue
                jobs.jobs[kind].size = entry['size_bytes']
                results.append(entry)
            if prune_old and not jobs.failed:
                deleted = prune(backup_dir, keep_min=keep_min, rdb_max_age_hours=rdb_max_age_hours,
                                aof_keep=aof_keep)
    except BaseException as exc:
        common = exc
    percentage = _percentage_or_none(client)
    jobs.close(common, snapshots=results, aof_rewrite_percentage=percentage)
    result = dict(changed=True, snapshots=results, skipped=skipped, pruned=deleted,
                  backup_dir=backup_dir, instance=instance,
                  files=[os.path.join(backup_dir, e['file']) for e in results],
                  size_bytes=sum(e['size_bytes'] for e in results),
                  aof_rewrite_percentage=percentage,
                  duration_seconds=round(time.monotonic() - began, 3))
    if reconciled:
        result['reconciled'] = reconciled
    return result


def _percentage_or_none(client):
    """The live auto-aof-rewrite-percentage (0 means automatic rewrites are off)."""
    if client is None:
        return None
    try:
        return int(_rewrite_percentage(client))
    except (BackupError, ValueError, redis.exceptions.RedisError):
        return None


def _snapshot_kind(client, layout, backup_dir, manifest, kind, instance, timeout, verify_load):
    taken = set(e['time'] for e in manifest.entries() if e.get('kind') == kind)
    # never older than a snapshot already there (runs within one second bump into the
    # future), so the newest name is always the newest snapshot
    stamps = [artifact_kind(e['file'])[1] for e in manifest.entries()
              if e.get('kind') == kind] + list(taken)
    newest = max(stamps) if stamps else None
    moment = naming.utcnow()
    if newest and newest >= naming.format_timestamp(moment):
        moment = naming.parse_timestamp('time', newest) + datetime.timedelta(seconds=1)
    stamp = naming.unique_timestamp(taken, moment)
    while os.path.lexists(os.path.join(backup_dir, artifact_name(kind, stamp))):
        taken.add(stamp)  # a file the manifest does not list: never overwrite it
        stamp = naming.unique_timestamp(taken)
    if kind == 'rdb':
        entry = snapshot_rdb(client, layout, backup_dir, stamp, timeout)
    else:
        entry = snapshot_aof(client, layout, backup_dir, stamp, timeout, verify_load)
    entry['instance'] = instance
    with manifest.update() as entries:
        entries[entry['file']] = entry
    set_pointer(backup_dir, kind, entry['file'])
    return entry


# --------------------------------------------------------------------------- listing

def list_snapshots(backup_dir=DEFAULT_BACKUP_DIR, verify=False):
    """Manifest entries newest first; with ``verify`` each gets ``verified`` (sha256 match)."""
    if not os.path.isdir(backup_dir):
        return []
    entries = list(reversed(Manifest(backup_dir).entries()))
    for entry in entries:
        path = os.path.join(backup_dir, entry['file'])
        entry['path'] = path
        entry['present'] = os.path.isfile(path)
        if verify:
            entry['verified'] = entry['present'] and durable.sha256_file(path) == entry['sha256']
    return entries


def resolve_snapshot(backup_dir, snapshot, snapshot_format=None):
    """Find a manifest entry by ``latest``, file name or timestamp. Raises naming ``snapshot``."""
    if snapshot_format is not None and snapshot_format not in FORMATS:
        raise BackupError('snapshot_format must be one of %s; got %r'
                          % (', '.join(FORMATS), snapshot_format), param='snapshot_format')
    if snapshot != 'latest':
        validate_snapshot_name('snapshot', snapshot)
    entries = [e for e in reversed(Manifest(backup_dir).entries()) if retention.is_good(e)]
    if snapshot_format:
        entries = [e for e in entries if e.get('kind') == snapshot_format]
    if snapshot == 'latest':
        if not snapshot_format:
            entries = [e for e in entries if e.get('kind') == 'rdb'] or entries
        if not entries:
            raise BackupError('no %ssnapshot in %s to restore' % (
                snapshot_format + ' ' if snapshot_format else '', backup_dir), param='snapshot')
        return entries[0]
    for entry in entries:
        if snapshot in (entry['file'], entry['time']):
            if snapshot == entry['time'] and not snapshot_format and entry.get('kind') != 'rdb':
                continue  # a bare timestamp means the RDB unless snapshot_format says aof
            return entry
    for entry in entries:
        if snapshot == entry['time']:
            return entry
    for entry in Manifest(backup_dir).entries():
        if snapshot == entry['file'] and not retention.is_good(entry):
            raise BackupError('snapshot %s is marked %s (%s): refusing it; pick another '
                              '(codeb-backup redis-list), or re-check it with codeb-backup '
                              'redis-verify' % (entry['file'], entry.get('status'),
                                                entry.get('verification_error') or 'no details'),
                              param='snapshot')
    known = ', '.join(e['file'] for e in entries[:5]) or 'none'
    raise BackupError('snapshot %r is not in the manifest of %s; use latest, a file name or a '
                      'timestamp (newest: %s)' % (snapshot, backup_dir, known), param='snapshot')


# --------------------------------------------------------------------------- restore

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
            time.sleep(_POLL)

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
                if not int(_info(client).get('loading', 1)):
                    return client
            except BackupError as exc:
                if exc.param == 'login_password':
                    raise  # up but refusing our credentials: waiting will not help
                last = exc.msg
            except redis.exceptions.BusyLoadingError:
                pass
            time.sleep(_POLL * 2)
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
    if pid and _pid_running(pid):
        return True
    try:
        connect(dict(conn, connect_timeout=1)).ping()
        return True
    except BackupError as exc:
        return exc.param == 'login_password'  # it answered, just not to us


def _pid_running(pid):
    """True while ``pid`` exists and is not a zombie (an exited child nobody reaped yet)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open('/proc/%d/stat' % int(pid)) as handle:
            return handle.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (OSError, IndexError):
        return True


def verify_artifact(backup_dir, entry, work_dir=None):
    """sha256 and size against the manifest, then the Redis check tool. For an AOF tar,
    extract into a temp dir in ``work_dir`` (caller removes it) and return its path.
    Raises ArtifactError only on evidence against the snapshot, BackupError otherwise."""
    path = os.path.join(backup_dir, naming.validate_file_name('file', entry['file']))
    if not os.path.lexists(path):
        raise ArtifactError('snapshot file %s is missing although the manifest lists it' % path,
                            param='snapshot')
    if os.path.islink(path) or not os.path.isfile(path):
        raise ArtifactError('snapshot %s is not a regular file' % path, param='snapshot')
    size = os.path.getsize(path)
    if size != entry['size_bytes']:
        raise ArtifactError('snapshot %s is %d bytes, the manifest says %d: refusing it; pick '
                            'another snapshot' % (path, size, entry['size_bytes']),
                            param='snapshot')
    actual = durable.sha256_file(path)
    if actual != entry['sha256']:
        raise ArtifactError('snapshot %s fails its checksum (manifest %s, file %s): refusing to '
                            'restore it; pick another snapshot' % (path, entry['sha256'], actual),
                            param='snapshot')
    if entry['kind'] == 'rdb':
        check_rdb(path)
        return None
    return _check_aof_tar(path, work_dir)


def _check_aof_tar(path, work_dir):
    """Extract an AOF snapshot tar into a temp dir in ``work_dir`` and check the set with
    redis-check-aof; return the dir (the caller removes it)."""
    extract = tempfile.mkdtemp(prefix=durable.TEMP_PREFIX + 'restore-', dir=work_dir)
    try:
        try:
            tar = tarfile.open(path)
        except tarfile.TarError as exc:
            raise ArtifactError('%s is not a readable tar file: %s' % (path, exc), param='snapshot')
        with tar:
            try:
                members = tar.getmembers()
            except tarfile.TarError as exc:
                raise ArtifactError('%s is a damaged tar file: %s' % (path, exc), param='snapshot')
            for member in members:
                parts = member.name.split('/')
                if (not member.isfile() or len(parts) != 2 or parts[0] != AOF_TAR_DIR
                        or parts[1] in ('', '.', '..')):
                    raise ArtifactError('unexpected member %r in %s' % (member.name, path),
                                        param='snapshot')
                with tar.extractfile(member) as src, \
                        open(os.path.join(extract, parts[1]), 'wb') as dst:
                    shutil.copyfileobj(src, dst, durable.CHUNK)
        manifests = [n for n in os.listdir(extract) if n.endswith('.manifest')]
        if len(manifests) != 1:
            raise ArtifactError('%s holds %d AOF manifests, expected 1' % (path, len(manifests)),
                                param='snapshot')
        check_aof(os.path.join(extract, manifests[0]), name=path)
    except BaseException:
        shutil.rmtree(extract, ignore_errors=True)
        raise
    return extract


def mark_failed(backup_dir, name, error):
    """Record evidence against a snapshot (call only with an ArtifactError's message):
    ``status: failed_verification``, so it is never restored as latest, shipped, or counted
    towards keep_min."""
    with Manifest(backup_dir).update() as entries:
        entry = entries.get(name)
        if entry is not None and entry.get('status') != 'deleting':
            entry.update(status='failed_verification', verification_error=error,
                         verified_at=naming.format_timestamp())
    _repair_pointers(backup_dir)


def predict_restore(conn, backup_dir, snapshot='latest', snapshot_format=None, instance=DEFAULT_INSTANCE,
                    service_name=None, stop_command=None, start_command=None, data_dir=None,
                    timeout=DEFAULT_TIMEOUT):
    """Check mode: validate as a real run would, find the snapshot and verify its sha256
    (read-only), check Redis answers; change nothing."""
    _validate_common(backup_dir, instance, timeout=timeout)
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
                size_bytes=entry['size_bytes'])


def restore_snapshot(conn, backup_dir=DEFAULT_BACKUP_DIR, snapshot='latest', snapshot_format=None,
                     instance=DEFAULT_INSTANCE, service_name=None, stop_command=None,
                     start_command=None, data_dir=None, appendonly=None,
                     timeout=DEFAULT_TIMEOUT, metrics_dir=metrics.DEFAULT_TEXTFILE_DIR,
                     lock_timeout=60):
    """``state: restored``. Everything that can be checked is checked before Redis stops.
    A snapshot that fails its sha256 or the Redis check tool is marked
    ``failed_verification`` (so ``latest`` moves on to the previous one) and refused."""
    _validate_common(backup_dir, instance, timeout=timeout)
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


def verify_snapshots(backup_dir=DEFAULT_BACKUP_DIR, snapshot='all', snapshot_format=None,
                     instance=DEFAULT_INSTANCE, metrics_dir=metrics.DEFAULT_TEXTFILE_DIR,
                     lock_timeout=60, check_mode=False):
    """``state: verified``: re-check ``all`` snapshots (or ``latest``, a name, a timestamp):
    size and sha256 against the manifest, then redis-check-rdb / redis-check-aof.

    Only evidence (ArtifactError) marks a snapshot ``failed_verification``; one that passes
    is ``ok`` again. If the check itself cannot run (tool missing, scratch space full),
    the run fails and no snapshot's status changes. Metrics kind ``redis_verify``."""
    _validate_common(backup_dir, instance)
    if snapshot_format is not None and snapshot_format not in FORMATS:
        raise BackupError('snapshot_format must be one of %s; got %r'
                          % (', '.join(FORMATS), snapshot_format), param='snapshot_format')
    if snapshot not in ('all', 'latest'):
        validate_snapshot_name('snapshot', snapshot)
    if not os.path.isdir(backup_dir):
        raise BackupError('backup_dir %s does not exist: nothing to verify' % backup_dir,
                          param='backup_dir')
    began = time.monotonic()
    with Job(METRIC_KIND['verify'], instance, metrics_dir, check_mode=check_mode,
             what='redis verification of %s' % backup_dir) as job:
        lock = contextlib.nullcontext() if check_mode else job_lock(
            os.path.join(backup_dir, LOCK_NAME), 'redis_snapshot job in %s' % backup_dir,
            wait=lock_timeout)
        with lock:
            if not check_mode:
                reconcile(backup_dir, instance=instance)
            entries = [e for e in Manifest(backup_dir).entries() if e.get('status') != 'deleting']
            if snapshot_format:
                entries = [e for e in entries if e.get('kind') == snapshot_format]
            if snapshot != 'all':
                chosen = resolve_snapshot(backup_dir, snapshot, snapshot_format)
                entries = [e for e in entries if e['file'] == chosen['file']]
            reports = []
            for entry in reversed(entries):
                report = dict(file=entry['file'], kind=entry['kind'], size_bytes=entry['size_bytes'],
                              previous_status=entry.get('status', 'ok'))
                extract = None
                try:
                    extract = verify_artifact(backup_dir, entry, work_dir=backup_dir)
                    report.update(ok=True, status='ok')
                except ArtifactError as exc:
                    report.update(ok=False, status='failed_verification', error=exc.msg)
                finally:
                    if extract:
                        shutil.rmtree(extract, ignore_errors=True)
                reports.append(report)
            changed = any(r['status'] != r['previous_status'] for r in reports)
            if not check_mode and reports:
                stamp = naming.format_timestamp()
                with Manifest(backup_dir).update() as current:
                    for report in reports:
                        entry = current.get(report['file'])
                        if entry is None or entry.get('status') == 'deleting':
                            continue
                        entry.update(status=report['status'], verified_at=stamp)
                        if report['ok']:
                            entry.pop('verification_error', None)
                        else:
                            entry['verification_error'] = report['error']
                _repair_pointers(backup_dir)
        job.size = sum(r['size_bytes'] for r in reports)
        bad = [r for r in reports if not r['ok']]
        if bad:
            raise ArtifactError('%d of %d snapshot(s) in %s failed verification and are marked '
                                'failed_verification: %s' % (
                                    len(bad), len(reports), backup_dir,
                                    '; '.join('%s: %s' % (r['file'], r['error']) for r in bad)),
                                param='snapshot', snapshots=reports, changed=changed)
    return dict(changed=changed, snapshots=reports, verified=True, backup_dir=backup_dir,
                size_bytes=job.size, duration_seconds=round(time.monotonic() - began, 3))


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
        low = None if expected is None else expected - int(entry.get('expires') or 0)
        if expected is not None and not low <= keys <= expected:
            raise BackupError('after restoring %s Redis holds %d keys, the manifest expects %s: '
                              'the previous data files were put back'
                              % (entry['file'], keys, expected))
        return dict(keys=keys, expected_keys=expected, aside_dir=aside,
                    loaded_from='aof' if layout['appendonly'] else 'rdb')
    except BaseException as exc:
        _roll_back(conn, control, layout, aside, moved, rdb_live, aof_live)
        if isinstance(exc, BackupError):
            exc.msg = '%s (restore rolled back: previous data files are in place again)' % exc.msg
        raise


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


# --------------------------------------------------------------------------- import (shipping)

def import_snapshot(src, entry, backup_dir=DEFAULT_BACKUP_DIR, keep_min=DEFAULT_KEEP_MIN,
                    rdb_max_age_hours=DEFAULT_RDB_MAX_AGE_HOURS, aof_keep=DEFAULT_AOF_KEEP,
                    prune_old=True, check_mode=False, lock_timeout=60):
    """``state: imported``: take a shipped snapshot into ``backup_dir`` (the backup host's
    copy), verifying its sha256 on arrival against the source manifest ``entry``; then the
    Redis check tool, manifest, pointer, retention. Idempotent: already there -> unchanged."""
    began = time.monotonic()
    if not isinstance(entry, dict) or not entry.get('file') or not entry.get('sha256'):
        raise BackupError('entry must be the source manifest entry (with file and sha256)',
                          param='entry')
    name = validate_snapshot_name('entry.file', entry['file'])
    kind = entry.get('kind')
    if kind not in FORMATS or not name.endswith(RDB_SUFFIX if kind == 'rdb' else AOF_SUFFIX):
        raise BackupError('entry.kind must be rdb or aof and match the file name; got %r / %r'
                          % (kind, name), param='entry')
    naming.parse_timestamp('entry.time', entry.get('time'))
    _validate_common(backup_dir, DEFAULT_INSTANCE)
    if not os.path.isfile(src):
        raise BackupError('src %s does not exist on this host' % src, param='src')
    final = os.path.join(backup_dir, name)
    known = Manifest(backup_dir).load().get(name) if os.path.isdir(backup_dir) else None
    if known and known.get('sha256') == entry['sha256'] and os.path.isfile(final):
        return dict(changed=False, file=final, sha256=entry['sha256'],
                    size_bytes=known['size_bytes'], duration_seconds=0, pruned=[])
    if check_mode:
        return dict(changed=True, file=final, sha256=entry['sha256'], size_bytes=os.path.getsize(src),
                    duration_seconds=0, pruned=[])
    durable.ensure_dir(backup_dir)
    with job_lock(os.path.join(backup_dir, LOCK_NAME), 'redis_snapshot job in %s' % backup_dir,
                  wait=lock_timeout):
        reconciled = reconcile(backup_dir)
        known = Manifest(backup_dir).load().get(name)
        if known and known.get('sha256') == entry['sha256'] and os.path.isfile(final):
            # e.g. adopted just now: a killed import had committed it whole
            return dict(changed=bool(reconciled), file=final, sha256=entry['sha256'],
                        size_bytes=known['size_bytes'], duration_seconds=0, pruned=[],
                        reconciled=reconciled)
        with durable.atomic_path(final) as temp:
            with open(src, 'rb') as source:
                sha, size = _copy_open_file(source, temp)
            if sha != entry['sha256']:
                raise BackupError('%s arrived damaged: sha256 %s, the source manifest says %s; '
                                  'nothing was stored, ship it again' % (src, sha, entry['sha256']),
                                  param='src')
            if kind == 'rdb':
                check_rdb(temp, name='the shipped %s' % name)
            else:
                shutil.rmtree(_check_aof_tar(temp, backup_dir), ignore_errors=True)
        record = dict(entry, sha256=sha, size_bytes=size, status='ok',
                      imported=naming.format_timestamp())
        for local_only in _LOCAL_FIELDS:  # facts of the source host
            record.pop(local_only, None)
        with Manifest(backup_dir).update() as entries:
            entries[name] = record
        set_pointer(backup_dir, kind, _newest(backup_dir, kind))
        deleted = prune(backup_dir, keep_min=keep_min, rdb_max_age_hours=rdb_max_age_hours,
                        aof_keep=aof_keep) if prune_old else []
    return dict(changed=True, file=final, sha256=sha, size_bytes=size, pruned=deleted,
                duration_seconds=round(time.monotonic() - began, 3))


def held_sha256(backup_dir):
    """The sha256s of the good snapshots ``backup_dir`` holds (listed and present)."""
    return [e['sha256'] for e in Manifest(backup_dir).entries()
            if retention.is_good(e) and e.get('sha256')
            and os.path.isfile(os.path.join(backup_dir, e['file']))]


def _accept_shipped(path, entry, backup_dir, keep_min=DEFAULT_KEEP_MIN,
                    rdb_max_age_hours=DEFAULT_RDB_MAX_AGE_HOURS, aof_keep=DEFAULT_AOF_KEEP,
                    lock_timeout=60):
    """The receiving side of shipping: a file that arrived whole goes through the import."""
    return import_snapshot(path, entry, backup_dir=backup_dir, keep_min=keep_min,
                           rdb_max_age_hours=rdb_max_age_hours, aof_keep=aof_keep,
                           lock_timeout=lock_timeout)


ship.register_channel(SHIP_CHANNEL, held=held_sha256, accept=_accept_shipped,
                      options=dict(keep_min=int, rdb_max_age_hours=int, aof_keep=int,
                                   lock_timeout=float))


def ship_snapshots(backup_dir, target, remote_dir, instance=DEFAULT_INSTANCE,
                   metrics_dir=metrics.DEFAULT_TEXTFILE_DIR, lock_timeout=60,
                   keep_min=DEFAULT_KEEP_MIN, rdb_max_age_hours=DEFAULT_RDB_MAX_AGE_HOURS,
                   aof_keep=DEFAULT_AOF_KEEP):
    """Ship every good snapshot in ``backup_dir`` that the backup host lacks (oldest first),
    each verified on arrival; ``target`` a ``ship.Target`` (host None: ``remote_dir`` is on
    this host, and the retention settings here apply there; a remote backup host applies
    the ones in its forced command). Writes the ``redis_ship`` job metrics."""
    _validate_common(backup_dir, instance)
    ship.validate_directory('ship_dir', remote_dir, None)
    if target.host is None and os.path.realpath(remote_dir) == os.path.realpath(backup_dir):
        return dict(changed=False, shipped=[], present=[], host='localhost',
                    directory=remote_dir, duration_seconds=0, size_bytes=0,
                    note='the backup root is this directory: nothing to ship')
    began = time.monotonic()
    with Job(METRIC_KIND['ship'], instance, metrics_dir,
             what='redis ship of %s to %s' % (backup_dir, target.host or remote_dir)) as job:
        with job_lock(os.path.join(backup_dir, LOCK_NAME), 'redis_snapshot in %s' % backup_dir,
                      wait=lock_timeout):
            artifacts = [(os.path.join(backup_dir, e['file']), e)
                         for e in Manifest(backup_dir).entries()
                         if retention.is_good(e) and os.path.isfile(os.path.join(backup_dir, e['file']))]
            artifacts = [(path, _ship_entry(e)) for path, e in artifacts]
            result = ship.push(artifacts, target, SHIP_CHANNEL, remote_dir, local_options=dict(
                keep_min=keep_min, rdb_max_age_hours=rdb_max_age_hours, aof_keep=aof_keep,
                lock_timeout=lock_timeout))
        job.size = sum(s['size_bytes'] for s in result['shipped'])
    result.update(duration_seconds=round(time.monotonic() - began, 3), size_bytes=job.size)
    return result


_LOCAL_FIELDS = ('path', 'present', 'verified', 'verified_at', 'verification_error', 'adopted')


def _ship_entry(entry):
    return {k: v for k, v in entry.items() if k not in _LOCAL_FIELDS}


def _newest(backup_dir, kind):
    entries = [e for e in Manifest(backup_dir).entries() if e.get('kind') == kind
               and retention.is_good(e)]
    return entries[-1]['file']


# --------------------------------------------------------------------------- live config

def normalize_setting(name, value):
    """Canonical string form of a persistence setting, as CONFIG GET reports it."""
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if name == 'save':
        if value in (None, '', [], '""'):
            return ''
        if isinstance(value, (list, tuple)):
            flat = []
            for point in value:
                if isinstance(point, dict):
                    flat += [point['seconds'], point['changes']]
                elif isinstance(point, (list, tuple)):
                    flat += list(point)
                else:
                    flat += str(point).split()
            return ' '.join(str(int(v)) for v in flat)
        return ' '.join(str(int(v)) for v in str(value).split())
    if name in _MEMORY_SETTINGS:
        return str(parse_memory(name, value))
    return str(value)


_UNITS = {'': 1, 'b': 1, 'k': 1000, 'kb': 1024, 'm': 1000 ** 2, 'mb': 1024 ** 2,
          'g': 1000 ** 3, 'gb': 1024 ** 3}


def parse_memory(name, value):
    match = re.match(r'\A\s*(\d+)\s*([a-zA-Z]*)\s*\Z', str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise BackupError('%s must be a size like 64mb; got %r' % (name, value), param='settings')
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def apply_settings(conn, settings, check_mode=False):
    """CONFIG SET the persistence ``settings`` that differ from the live values. Settings
    Redis cannot change live are reported in ``restart_required`` instead."""
    if not isinstance(settings, dict):
        raise BackupError('settings must be a dict of redis.conf persistence settings',
                          param='settings')
    unknown = sorted(set(settings) - set(PERSISTENCE_SETTINGS))
    if unknown:
        raise BackupError('settings %s are not persistence settings this module manages (%s)'
                          % (', '.join(unknown), ', '.join(PERSISTENCE_SETTINGS)),
                          param='settings')
    desired = {k: normalize_setting(k, v) for k, v in settings.items()}
    client = connect(conn)
    before, changes, restart = {}, [], []
    for name in sorted(desired):
        current = _decode_map(client.config_get(name)).get(name)
        if current is None:
            raise BackupError('Redis does not know setting %r' % name, param='settings')
        before[name] = normalize_setting(name, current)
        if before[name] == desired[name]:
            continue
        if name in RESTART_ONLY:
            restart.append(name)
        else:
            changes.append(name)
    if not check_mode:
        for name in changes:
            try:
                client.config_set(name, desired[name])
            except redis.exceptions.ResponseError as exc:
                raise BackupError('CONFIG SET %s %r failed: %s' % (name, desired[name], exc),
                                  param='settings')
    after = dict(before)
    after.update({k: desired[k] for k in changes + restart})
    return dict(changed=bool(changes or restart), applied=changes, restart_required=restart,
                before=before, after=after)


# --------------------------------------------------------------------------- host CLI

def _conn_from_args(args):
    password = os.environ.get('REDISCLI_AUTH')
    if args.password_file:
        try:
            with open(args.password_file) as handle:
                password = handle.read().strip()
        except OSError as exc:
            raise BackupError('cannot read --password-file: %s' % exc, param='password_file')
    return dict(login_host=args.host, login_port=args.port, login_user=args.user,
                login_password=password, login_unix_socket=args.socket)


def _add_common(parser):
    parser.add_argument('--host', default='127.0.0.1', help='Redis host (default 127.0.0.1)')
    parser.add_argument('--port', type=int, default=6379, help='Redis port (default 6379)')
    parser.add_argument('--socket', help='Redis unix socket (instead of host/port)')
    parser.add_argument('--user', help='ACL user name')
    parser.add_argument('--password-file',
                        help='file (0600) holding the password; else $REDISCLI_AUTH is used')
    parser.add_argument('--backup-dir', default=DEFAULT_BACKUP_DIR,
                        help='snapshot directory (default %s)' % DEFAULT_BACKUP_DIR)
    parser.add_argument('--instance', default=DEFAULT_INSTANCE,
                        help='instance name for metrics and messages (default %s)' % DEFAULT_INSTANCE)
    parser.add_argument('--data-dir', help='Redis data directory if not the one CONFIG GET dir says')
    parser.add_argument('--timeout', type=float, default=DEFAULT_TIMEOUT,
                        help='seconds to wait for saves / rewrites / restarts')
    parser.add_argument('--metrics-dir', default=metrics.DEFAULT_TEXTFILE_DIR,
                        help='node_exporter textfile dir ("" disables metrics)')
    parser.add_argument('--lock-timeout', type=float, default=60)


def register_cli(subparsers):
    snap = subparsers.add_parser('redis-snapshot', help='fresh, checked RDB + AOF snapshot of Redis')
    _add_common(snap)
    snap.add_argument('--formats', default='rdb,aof', help='comma list of rdb,aof (default both)')
    snap.add_argument('--keep-min', type=int, default=DEFAULT_KEEP_MIN)
    snap.add_argument('--rdb-max-age-hours', type=int, default=DEFAULT_RDB_MAX_AGE_HOURS)
    snap.add_argument('--aof-keep', type=int, default=DEFAULT_AOF_KEEP)
    snap.add_argument('--no-prune', action='store_true', help='skip retention')
    snap.add_argument('--no-verify-load', action='store_true',
                      help='do not load AOF snapshots into a scratch redis-server to count keys')
    snap.add_argument('--ship', action='store_true',
                      help='then ship what the backup host lacks (see redis-ship)')
    ship.add_target_arguments(snap)
    snap.set_defaults(handler=_cli_snapshot)

    shp = subparsers.add_parser(
        'redis-ship', help='ship the snapshots the backup host lacks, verified on arrival',
        description='Asks the backup host (over SSH, its forced command "codeb-backup '
                    'receive") which snapshots it holds and streams the others to it; each is '
                    'checked (sha256, redis-check-rdb) there before it enters its manifest. '
                    'Without --ship-host the backup root is a directory on this host.')
    shp.add_argument('--backup-dir', default=DEFAULT_BACKUP_DIR,
                     help='snapshot directory on this host (default %s)' % DEFAULT_BACKUP_DIR)
    shp.add_argument('--instance', default=DEFAULT_INSTANCE)
    shp.add_argument('--metrics-dir', default=metrics.DEFAULT_TEXTFILE_DIR,
                     help='node_exporter textfile dir ("" disables metrics)')
    shp.add_argument('--lock-timeout', type=float, default=60)
    shp.add_argument('--keep-min', type=int, default=DEFAULT_KEEP_MIN,
                     help='retention there when the backup root is on this host')
    shp.add_argument('--rdb-max-age-hours', type=int, default=DEFAULT_RDB_MAX_AGE_HOURS)
    shp.add_argument('--aof-keep', type=int, default=DEFAULT_AOF_KEEP)
    ship.add_target_arguments(shp)
    shp.set_defaults(handler=_cli_ship)

    rest = subparsers.add_parser('redis-restore', help='restore an RDB or AOF snapshot into Redis')
    _add_common(rest)
    rest.add_argument('--snapshot', default='latest', help='latest, a file name or a timestamp')
    rest.add_argument('--format', choices=FORMATS, help='rdb or aof (for latest / a timestamp)')
    rest.add_argument('--service-name', help='systemd unit to stop/start (e.g. redis-server)')
    rest.add_argument('--stop-command', help='command that stops Redis (default SHUTDOWN NOSAVE)')
    rest.add_argument('--start-command', help='command that starts Redis')
    rest.set_defaults(handler=_cli_restore)

    ver = subparsers.add_parser(
        'redis-verify', help='re-check Redis snapshots (sha256, redis-check-rdb/-aof)',
        description='Marks a snapshot failed_verification only on evidence against it (sha256, '
                    'size, the check tool rejecting it); if the check cannot run (tool missing, '
                    'disk full) the run fails and no status changes.')
    ver.add_argument('--backup-dir', default=DEFAULT_BACKUP_DIR)
    ver.add_argument('--snapshot', default='all', help='all (default), latest, a file name or a '
                     'timestamp')
    ver.add_argument('--format', choices=FORMATS, help='only rdb or aof snapshots')
    ver.add_argument('--instance', default=DEFAULT_INSTANCE)
    ver.add_argument('--metrics-dir', default=metrics.DEFAULT_TEXTFILE_DIR,
                     help='node_exporter textfile dir ("" disables metrics)')
    ver.add_argument('--lock-timeout', type=float, default=60)
    ver.set_defaults(handler=_cli_verify)

    lst = subparsers.add_parser('redis-list', help='list Redis snapshots (newest first)')
    lst.add_argument('--backup-dir', default=DEFAULT_BACKUP_DIR)
    lst.add_argument('--verify', action='store_true', help='check each sha256')
    lst.set_defaults(handler=_cli_list)


def _cli_verify(args):
    return verify_snapshots(args.backup_dir, snapshot=args.snapshot, snapshot_format=args.format,
                            instance=args.instance, metrics_dir=args.metrics_dir,
                            lock_timeout=args.lock_timeout)


def _cli_list(args):
    return dict(snapshots=list_snapshots(args.backup_dir, args.verify))


def _ship_from_args(args):
    if not args.ship_dir:
        raise BackupError('--ship-dir is required: the snapshot directory on the backup host',
                          param='ship_dir')
    return ship_snapshots(args.backup_dir, ship.target_from_args(args), args.ship_dir,
                          instance=args.instance, metrics_dir=args.metrics_dir,
                          lock_timeout=args.lock_timeout, keep_min=args.keep_min,
                          rdb_max_age_hours=args.rdb_max_age_hours, aof_keep=args.aof_keep)


def _cli_ship(args):
    return _ship_from_args(args)


def _cli_snapshot(args):
    if args.ship:
        target = ship.target_from_args(args)  # bad shipping options fail before the snapshot
        if not args.ship_dir:
            raise BackupError('--ship needs --ship-dir', param='ship_dir')
        del target
    result = _snapshot_from_args(args)
    if args.ship:
        result['ship'] = _ship_from_args(args)
    return result


def _snapshot_from_args(args):
    return take_snapshot(_conn_from_args(args), backup_dir=args.backup_dir, instance=args.instance,
                         formats=[f.strip() for f in args.formats.split(',') if f.strip()],
                         data_dir=args.data_dir, timeout=args.timeout, keep_min=args.keep_min,
                         rdb_max_age_hours=args.rdb_max_age_hours, aof_keep=args.aof_keep,
                         prune_old=not args.no_prune, verify_load=not args.no_verify_load,
                         metrics_dir=args.metrics_dir, lock_timeout=args.lock_timeout)


def _cli_restore(args):
    return restore_snapshot(_conn_from_args(args), backup_dir=args.backup_dir,
                            snapshot=args.snapshot, snapshot_format=args.format,
                            instance=args.instance, service_name=args.service_name,
                            stop_command=args.stop_command, start_command=args.start_command,
                            data_dir=args.data_dir, timeout=args.timeout,
                            metrics_dir=args.metrics_dir, lock_timeout=args.lock_timeout)
