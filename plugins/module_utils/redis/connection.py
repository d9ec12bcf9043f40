# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connecting to Redis and reading its state: PING with errors that name the option,
``INFO persistence`` polling, the instance's file layout, and the /proc facts the restore
and the scratch-server clean-up rely on."""

from __future__ import annotations

import os
import time

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.redis.options import CONNECTION_DEFAULTS, POLL

try:
    import redis
    HAS_REDIS = True
except ImportError:  # pragma: no cover - reported by connect()
    redis = None
    HAS_REDIS = False


def connect(conn):
    """A ``redis.Redis`` client for ``conn`` (CONNECTION_DEFAULTS keys) that answered PING."""
    if not HAS_REDIS:
        raise BackupError('the python "redis" client is not installed on this host '
                          '(Debian: apt install python3-redis)')
    conn = dict(CONNECTION_DEFAULTS, **{k: v for k, v in conn.items() if v is not None})
    kwargs = dict(username=conn['login_user'] or None, password=conn['login_password'] or None,
                  socket_timeout=60, socket_connect_timeout=float(conn['connect_timeout']),
                  **no_retry())
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


def no_retry():
    """Fail fast: redis-py >= 5 retries a refused connection with backoff by default,
    which hides a stopped server for seconds."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    return dict(retry=Retry(NoBackoff(), 0))


def persistence_info(client):
    return client.info('persistence')


def wait_for(client, ready, timeout, what, on_poll=None, interval=None):
    """Poll INFO persistence until ``ready(info)``; return that info. ``on_poll()`` runs
    between the round trips."""
    deadline = time.monotonic() + timeout
    while True:
        info = persistence_info(client)
        if ready(info):
            return info
        if time.monotonic() >= deadline:
            raise BackupError('timed out after %s s waiting for %s on Redis at %s; raise '
                              'timeout if the dataset is large' % (timeout, what, client.codeb_where),
                              param='timeout')
        if on_poll is not None:
            on_poll()
        time.sleep(POLL if interval is None else interval)


def server_layout(client, data_dir=None):
    """Where the instance keeps its files, from CONFIG GET (``data_dir`` overrides ``dir``)."""
    layout = {}
    try:
        for key in ('dir', 'dbfilename', 'appendonly', 'appenddirname', 'appendfilename',
                    'auto-aof-rewrite-percentage'):
            layout.update(decode_map(client.config_get(key)))
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


def decode_map(value):
    return {_text(k): _text(v) for k, v in value.items()}


def _text(value):
    return value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)


def count_keys(client):
    total = 0
    for name, stats in client.info('keyspace').items():
        if str(name).startswith('db') and isinstance(stats, dict):
            total += int(stats.get('keys', 0))
    return total


def proc_start_time(pid):
    try:
        with open('/proc/%d/stat' % int(pid)) as handle:
            return int(handle.read().rsplit(')', 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def proc_cmdline(pid):
    try:
        with open('/proc/%d/cmdline' % int(pid), 'rb') as handle:
            return handle.read().decode('utf-8', 'replace')
    except (OSError, ValueError):
        return ''


def pid_running(pid):
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


def rewrite_percentage(client):
    try:
        return decode_map(client.config_get('auto-aof-rewrite-percentage'))[
            'auto-aof-rewrite-percentage']
    except (redis.exceptions.RedisError, KeyError) as exc:
        raise BackupError('CONFIG GET auto-aof-rewrite-percentage failed on Redis at %s (%s)'
                          % (client.codeb_where, exc), param='login_user')


def run_id(client):
    return client.info('server').get('run_id')
