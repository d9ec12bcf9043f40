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

import contextlib
import datetime
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
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest

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
               'ship': 'redis_ship'}
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


# --------------------------------------------------------------------------- checks

_KEYS_RE = re.compile(r'\[info\] (\d+) keys read')
_EXPIRES_RE = re.compile(r'\[info\] (\d+) expires')


def check_rdb(path):
    """Run redis-check-rdb on ``path``; return ``(keys, expires)``; raise if it is damaged."""
    proc = process.run(['redis-check-rdb', path], what='redis-check-rdb', check=False)
    out = (proc.stdout or '') + (proc.stderr or '')
    if proc.returncode != 0 or 'RDB looks OK' not in out:
        raise BackupError('redis-check-rdb refused %s: %s' % (
            path, _tail(out)), check_output=_tail(out))
    keys = _KEYS_RE.search(out)
    expires = _EXPIRES_RE.search(out)
    return int(keys.group(1)) if keys else 0, int(expires.group(1)) if expires else 0


def check_aof(manifest_path, fix_truncated_tail=False):
    """Run redis-check-aof on a multi-part AOF manifest. A copy of a live AOF may end in
    the middle of the last command of the last INCR file; with ``fix_truncated_tail`` that
    tail (and only that) is cut off, as Redis itself does with ``aof-load-truncated yes``.
    Returns a note if a tail was cut."""
    proc = process.run(['redis-check-aof', manifest_path], what='redis-check-aof', check=False)
    out = (proc.stdout or '') + (proc.stderr or '')
    if proc.returncode == 0 and 'valid' in out and 'not valid' not in out:
        return None
    if fix_truncated_tail and 'truncated' in out.lower():
        fixed = process.run(['redis-check-aof', '--fix', manifest_path], input_data='y\n',
                            what='redis-check-aof --fix', check=False)
        again = process.run(['redis-check-aof', manifest_path], what='redis-check-aof',
                            check=False)
        if again.returncode == 0:
            return 'cut a truncated last command from the copied INCR file: %s' % _tail(
                fixed.stdout, 300)
    raise BackupError('redis-check-aof refused %s: %s' % (manifest_path, _tail(out)),
                      check_output=_tail(out))


def _tail(text, limit=1500):
    return (text or '').strip()[-limit:]


@contextlib.contextmanager
def scratch_server(data_dir, appendonly, timeout=DEFAULT_TIMEOUT, dbfilename='dump.rdb',
                   appenddirname=AOF_TAR_DIR, appendfilename='appendonly.aof'):
    """A private redis-server on a unix socket only, loading the files in ``data_dir``;
    yields a client once loading finished. Used to count an AOF snapshot's keys."""
    sock_dir = tempfile.mkdtemp(prefix='codeb-redis-scratch-')
    sock = os.path.join(sock_dir, 'redis.sock')
    argv = [shutil.which('redis-server') or '/usr/bin/redis-server', '--port', '0',
            '--unixsocket', sock, '--unixsocketperm', '700', '--dir', data_dir,
            '--dbfilename', dbfilename, '--appendonly', 'yes' if appendonly else 'no',
            '--appenddirname', appenddirname, '--appendfilename', appendfilename,
            '--save', '', '--auto-aof-rewrite-percentage', '0', '--daemonize', 'no',
            '--logfile', os.path.join(sock_dir, 'redis.log'), '--protected-mode', 'yes']
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as exc:
        shutil.rmtree(sock_dir, ignore_errors=True)
        raise BackupError('cannot start a scratch redis-server to verify the snapshot (%s); '
                          'install redis-server or set verify_load=false' % exc,
                          param='verify_load')
    try:
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
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(sock_dir, ignore_errors=True)


def _read(path):
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ''


# --------------------------------------------------------------------------- snapshot

_TS = r'\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}'
_SNAPSHOT_RE = re.compile(r'\A(?:%s%s%s|%s%s%s|%s)\Z' % (
    re.escape(RDB_PREFIX), _TS, re.escape(RDB_SUFFIX), re.escape(AOF_PREFIX), _TS,
    re.escape(AOF_SUFFIX), _TS))


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
        box['result'] = check_rdb(path)
    except BackupError as exc:
        box['error'] = exc


def read_aof_manifest(path):
    """Parse a Redis 7 AOF manifest; return ``(bytes, [file names])``."""
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
            raise BackupError('unexpected line in AOF manifest %s: %r' % (path, line))
        names.append(name)
    if not names:
        raise BackupError('AOF manifest %s names no files' % path)
    return data, names


def snapshot_aof(client, layout, backup_dir, stamp, timeout=DEFAULT_TIMEOUT, verify_load=True):
    """Copy the multi-part AOF as one consistent set; return the manifest entry."""
    began = time.monotonic()
    aof_dir = os.path.join(layout['dir'], layout['appenddirname'])
    manifest_name = layout['appendfilename'] + '.manifest'
    original = layout['auto-aof-rewrite-percentage']
    staging = tempfile.mkdtemp(prefix=durable.TEMP_PREFIX + 'aof-', dir=backup_dir)
    note = None
    try:
        client.config_set('auto-aof-rewrite-percentage', 0)
        try:
            _wait(client, lambda i: not int(i['aof_rewrite_in_progress'])
                  and not int(i['aof_rewrite_scheduled']), timeout, 'the AOF rewrite to finish')
            names = _copy_aof_set(aof_dir, manifest_name, staging)
        finally:
            try:
                client.config_set('auto-aof-rewrite-percentage', original)
            except redis.exceptions.RedisError as exc:
                raise BackupError('could not restore auto-aof-rewrite-percentage to %s on %s '
                                  '(%s): set it by hand' % (original, client.codeb_where, exc))
        note = check_aof(os.path.join(staging, manifest_name), fix_truncated_tail=True)
        keys = None
        if verify_load:
            with scratch_server(os.path.dirname(staging), True, timeout,
                                appenddirname=os.path.basename(staging),
                                appendfilename=layout['appendfilename']) as scratch:
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
    """Apply retention: drop the manifest entry first, then the file. Returns deleted names."""
    now = now or naming.utcnow()
    manifest = Manifest(backup_dir)
    deleted = []
    with manifest.update() as entries:
        _keep, delete = plan_prune(list(entries.values()), now, keep_min, rdb_max_age_hours,
                                   aof_keep)
        for entry in delete:
            entries.pop(entry['file'], None)
            deleted.append(entry['file'])
    for name in deleted:
        durable.discard(os.path.join(backup_dir, name))
    if deleted:
        durable.fsync_dir(backup_dir)
    return deleted


def _record_metrics(metrics_dir, kind, instance, ok, duration, size=None):
    try:
        metrics.write_job_metrics(METRIC_KIND[kind], instance, ok, duration, size=size,
                                  textfile_dir=metrics_dir)
    except OSError as exc:
        raise BackupError('could not write metrics to %s: %s' % (metrics_dir, exc),
                          param='metrics_dir')


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
    """``state: present``: RDB and/or AOF snapshots, pointers, retention, metrics."""
    _validate_common(backup_dir, instance, formats, timeout)
    if int(keep_min) < 1:
        raise BackupError('keep_min must be at least 1; got %r' % (keep_min,), param='keep_min')
    began = time.monotonic()
    try:
        client = connect(conn)
        layout = server_layout(client, data_dir)
    except BackupError:
        # monitoring must see this run failed; no artifact or directory is written
        for kind in formats:
            _record_metrics(metrics_dir, kind, instance, False, time.monotonic() - began)
        raise
    durable.ensure_dir(backup_dir)
    results, skipped = [], {}
    with job_lock(os.path.join(backup_dir, LOCK_NAME), 'redis_snapshot into %s' % backup_dir,
                  wait=lock_timeout):
        durable.remove_stale_temps(backup_dir)
        manifest = Manifest(backup_dir)
        for kind in formats:
            if kind == 'aof' and not layout['appendonly']:
                skipped['aof'] = 'appendonly is no on this instance'
                if metrics_dir:
                    # no AOF job here (RedisAOFDisabled covers that): drop a stale failure
                    # an earlier unreachable run recorded, so BackupFailed does not fire on it
                    durable.discard(metrics.metrics_path(metrics_dir, METRIC_KIND['aof'],
                                                         instance))
                continue
            kind_began = time.monotonic()
            try:
                taken = set(e['time'] for e in manifest.entries() if e.get('kind') == kind)
                stamp = naming.unique_timestamp(taken)
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
            except BaseException:
                _record_metrics(metrics_dir, kind, instance, False, time.monotonic() - kind_began)
                raise
            _record_metrics(metrics_dir, kind, instance, True, entry['duration_seconds'],
                            entry['size_bytes'])
            results.append(entry)
        deleted = []
        if prune_old:
            deleted = prune(backup_dir, keep_min=keep_min, rdb_max_age_hours=rdb_max_age_hours,
                            aof_keep=aof_keep)
    return dict(changed=True, snapshots=results, skipped=skipped, pruned=deleted,
                backup_dir=backup_dir, instance=instance,
                files=[os.path.join(backup_dir, e['file']) for e in results],
                size_bytes=sum(e['size_bytes'] for e in results),
                duration_seconds=round(time.monotonic() - began, 3))


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
    """sha256 against the manifest, then the Redis check tool. For an AOF tar, extract into
    a temp dir in ``work_dir`` (caller removes it) and return its path."""
    path = os.path.join(backup_dir, entry['file'])
    if not os.path.isfile(path):
        raise BackupError('snapshot file %s is missing although the manifest lists it' % path,
                          param='snapshot')
    actual = durable.sha256_file(path)
    if actual != entry['sha256']:
        raise BackupError('snapshot %s fails its checksum (manifest %s, file %s): refusing to '
                          'restore it; pick another snapshot' % (path, entry['sha256'], actual),
                          param='snapshot')
    if entry['kind'] == 'rdb':
        check_rdb(path)
        return None
    extract = tempfile.mkdtemp(prefix=durable.TEMP_PREFIX + 'restore-', dir=work_dir)
    try:
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            for member in members:
                parts = member.name.split('/')
                if (not member.isfile() or len(parts) != 2 or parts[0] != AOF_TAR_DIR
                        or parts[1] in ('', '.', '..')):
                    raise BackupError('unexpected member %r in %s' % (member.name, path),
                                      param='snapshot')
                with tar.extractfile(member) as src, \
                        open(os.path.join(extract, parts[1]), 'wb') as dst:
                    shutil.copyfileobj(src, dst, durable.CHUNK)
        manifests = [n for n in os.listdir(extract) if n.endswith('.manifest')]
        if len(manifests) != 1:
            raise BackupError('%s holds %d AOF manifests, expected 1' % (path, len(manifests)),
                              param='snapshot')
        check_aof(os.path.join(extract, manifests[0]))
    except BaseException:
        shutil.rmtree(extract, ignore_errors=True)
        raise
    return extract


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
    """``state: restored``. Everything that can be checked is checked before Redis stops."""
    _validate_common(backup_dir, instance, timeout=timeout)
    began = time.monotonic()
    control = Control(service_name, stop_command, start_command, timeout)
    entry = resolve_snapshot(backup_dir, snapshot, snapshot_format)
    try:
        client = connect(conn)
        layout = server_layout(client, data_dir)
    except BackupError:
        if not data_dir:
            raise
        client, layout = None, dict(dir=data_dir, dbfilename='dump.rdb', appenddirname=AOF_TAR_DIR,
                                    appendfilename='appendonly.aof', appendonly=bool(appendonly),
                                    pid=None)
    if appendonly is not None:
        layout['appendonly'] = bool(appendonly)
    data = layout['dir']
    ok = False
    with job_lock(os.path.join(backup_dir, LOCK_NAME), 'redis_snapshot job in %s' % backup_dir,
                  wait=lock_timeout):
        extract = None
        try:
            extract = verify_artifact(backup_dir, entry, work_dir=data)
            result = _swap_in(client, conn, control, layout, backup_dir, entry, extract)
            ok = True
        finally:
            if extract:
                shutil.rmtree(extract, ignore_errors=True)
            _record_metrics(metrics_dir, 'restore', instance, ok, time.monotonic() - began,
                            entry['size_bytes'] if ok else None)
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
                                dbfilename=os.path.basename(extract) + '.rdb') as scratch:
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
        durable.remove_stale_temps(backup_dir)
        with durable.atomic_path(final) as temp:
            with open(src, 'rb') as source:
                sha, size = _copy_open_file(source, temp)
            if sha != entry['sha256']:
                raise BackupError('%s arrived damaged: sha256 %s, the source manifest says %s; '
                                  'nothing was stored, ship it again' % (src, sha, entry['sha256']),
                                  param='src')
            if kind == 'rdb':
                check_rdb(temp)
        record = dict(entry, sha256=sha, size_bytes=size, status='ok',
                      imported=naming.format_timestamp())
        for local_only in ('path', 'present', 'verified'):  # facts of the source host
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
    try:
        with job_lock(os.path.join(backup_dir, LOCK_NAME), 'redis_snapshot in %s' % backup_dir,
                      wait=lock_timeout):
            artifacts = [(os.path.join(backup_dir, e['file']), e)
                         for e in Manifest(backup_dir).entries()
                         if retention.is_good(e) and os.path.isfile(os.path.join(backup_dir, e['file']))]
            artifacts = [(path, _ship_entry(e)) for path, e in artifacts]
            result = ship.push(artifacts, target, SHIP_CHANNEL, remote_dir, local_options=dict(
                keep_min=keep_min, rdb_max_age_hours=rdb_max_age_hours, aof_keep=aof_keep,
                lock_timeout=lock_timeout))
    except BaseException:
        if metrics_dir:
            _record_metrics(metrics_dir, 'ship', instance, False, time.monotonic() - began)
        raise
    size = sum(s['size_bytes'] for s in result['shipped'])
    result.update(duration_seconds=round(time.monotonic() - began, 3), size_bytes=size)
    if metrics_dir:
        _record_metrics(metrics_dir, 'ship', instance, True, result['duration_seconds'], size)
    return result


def _ship_entry(entry):
    return {k: v for k, v in entry.items() if k not in ('path', 'present', 'verified')}


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

    lst = subparsers.add_parser('redis-list', help='list Redis snapshots (newest first)')
    lst.add_argument('--backup-dir', default=DEFAULT_BACKUP_DIR)
    lst.add_argument('--verify', action='store_true', help='check each sha256')
    lst.set_defaults(handler=_cli_list)


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
