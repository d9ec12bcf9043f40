# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of ``codeb-backup drill``, each defined once, and the checks that run
before any drill starts (bad input changes nothing)."""

from __future__ import annotations

import os

from ansible_collections.codeb.backup.plugins.module_utils import metrics, naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.env import store as env_store
from ansible_collections.codeb.backup.plugins.module_utils.locking import lock_timeout_option
from ansible_collections.codeb.backup.plugins.module_utils.postgres import options as pg_options
from ansible_collections.codeb.backup.plugins.module_utils.postgres import pgbackrest as pb
from ansible_collections.codeb.backup.plugins.module_utils.postgres.connection import (
    CONNECTION_OPTIONS, DEFAULT_PG_BIN_DIR, PASSWORD_ENV, PASSWORD_FILE_OPTION, check_connection,
    read_password_file)
from ansible_collections.codeb.backup.plugins.module_utils.redis import options as redis_options
from ansible_collections.codeb.backup.plugins.module_utils.spec import Option, prefixed

# The drills, in the order they run; the metrics kind is 'drill_' + kind. pgbackrest runs
# by default only when a stanza is given.
KINDS = ('pgbackrest', 'pg_snapshot', 'redis', 'env')
METRIC_KIND = dict((kind, 'drill_' + kind) for kind in KINDS)
# Not under the backup root /opt/codeb: that is 0700 on the storage host, and the scratch
# cluster's postgres must reach its directory through every parent.
DEFAULT_SCRATCH_PATH = '/var/lib/codeb-drill-scratch'
# Data directories of the packaged servers: a scratch path there (or below) is refused
# even when no server runs at the moment.
DEFAULT_PROTECTED_PATHS = ('/var/lib/postgresql', '/var/lib/redis', '/etc/postgresql')
DEFAULT_RESERVE_MB = 256
DEFAULT_TIMEOUT = 600.0
DEFAULT_LOCK_TIMEOUT = 60.0
# The deepest socket below the scratch path is the restored pgbackrest cluster's, in its
# data directory: {scratch}/pgbackrest/pgbackrest-<12 hex>/data/.s.PGSQL.5432. A unix
# socket path holds at most 107 bytes; a longer one fails only when the cluster starts.
_DEEPEST_SOCKET = len('/pgbackrest/pgbackrest-%s/data/.s.PGSQL.5432' % ('0' * 12))
MAX_SCRATCH_PATH = 107 - _DEEPEST_SOCKET

# The primary the pgbackrest drill writes its marker rows on: the connection options of
# every PostgreSQL job, under a prefix (the scratch cluster is reached by its own socket).
PRIMARY_NAMES, PRIMARY_CONNECTION = prefixed(
    'pgbackrest_primary_', CONNECTION_OPTIONS + (PASSWORD_FILE_OPTION,),
    renames=dict(pg_bin_dir='bin_dir'))
PGBACKREST_OPTIONS = (
    Option('pgbackrest_stanza', help='stanza whose latest backup the pgbackrest drill restores'),
    pb.option('repo_user').replace(name='pgbackrest_repo_user', aliases=(), flag_aliases=()),
    pb.option('config').replace(name='pgbackrest_config', aliases=(), flag_aliases=()),
    Option('pgbackrest_marker_db', default='postgres',
           help='database on the primary that holds the drill\'s marker table '
                'codeb_drill.marker'),
) + PRIMARY_CONNECTION

OPTIONS = (
    Option('kinds', type='list', elements='str',
           help='drills to run: %s (repeat the flag, or a comma list; default all, '
                'pgbackrest only with --pgbackrest-stanza)' % ', '.join(KINDS)),
    Option('scratch_path', type='path', default=DEFAULT_SCRATCH_PATH,
           help='directory of the drills\' scratch servers and copies, never a production '
                'data directory'),
    Option('scratch_reserve_mb', type='int', default=DEFAULT_RESERVE_MB,
           help='MiB that must stay free on the scratch filesystem on top of what a drill '
                'needs'),
    Option('protected_paths', type='list', elements='str', default=list(DEFAULT_PROTECTED_PATHS),
           help='production data directories a scratch path must never be or be inside (the '
                'data directories of running postgres and redis-server processes are always '
                'protected)'),
    Option('pg_backup_dir', type='path', default=pg_options.DEFAULT_BACKUP_DIR,
           help='pg_dump snapshot store'),
    Option('pg_databases', type='list', elements='str',
           help='databases to drill (default: every database in the manifest)'),
    Option('pg_every_snapshot', type='bool', default=False,
           help='restore every kept snapshot, not only each database\'s newest'),
    Option('pg_os_user', default='postgres',
           help='OS user the scratch PostgreSQL cluster runs as'),
    Option('pg_bin_dir', type='path', default=DEFAULT_PG_BIN_DIR,
           help='directory of initdb, postgres, pg_restore and psql'),
    Option('pg_scratch_socket', type='path',
           help='socket directory of an existing scratch cluster to use instead of starting '
                'one (never a production cluster)'),
    Option('pg_scratch_port', type='int', default=5432,
           help='port of the cluster given by --pg-scratch-socket'),
    Option('redis_backup_dir', type='path', default=redis_options.DEFAULT_BACKUP_DIR,
           help='Redis snapshot store'),
    Option('redis_instance', default=redis_options.DEFAULT_INSTANCE,
           help='instance name of the Redis store (the metrics target)'),
    Option('redis_sentinel_key',
           help='a key written before every snapshot that each snapshot must hold'),
    Option('env_root', type='path', default=env_store.DEFAULT_ROOT, help='env store root'),
    Option('env_targets', type='list', elements='str',
           help='project/environment pairs to drill (default: every one in the store)'),
    Option('timeout', type='float', default=DEFAULT_TIMEOUT,
           help='seconds a scratch server may take to start or load'),
    lock_timeout_option(DEFAULT_LOCK_TIMEOUT, 'the same drill kind'),
    metrics.METRICS_DIR_OPTION,
) + PGBACKREST_OPTIONS


def _absolute(params, name):
    value = params.get(name)
    if not isinstance(value, str) or not os.path.isabs(value) or '..' in value.split('/') \
            or value.rstrip('/') == '':
        raise BackupError('%s must be an absolute path without ".." (not /); got %r'
                          % (name, value), param=name)
    return os.path.normpath(value)


def _flat(values):
    """A list option as given by a module (a list) or the host command (each flag value may
    be a comma list)."""
    result = []
    for value in values or ():
        if not isinstance(value, str):
            raise BackupError('expected a list of strings; got %r' % (value,))
        result += [part.strip() for part in value.split(',') if part.strip()]
    return result


def check_scratch_length(path):
    """Refuse a scratch path too long for the sockets of the servers below it."""
    if len(path.encode()) > MAX_SCRATCH_PATH:
        raise BackupError('scratch_path %s is too long: the scratch servers\' sockets below it '
                          'need it to be at most %d bytes' % (path, MAX_SCRATCH_PATH),
                          param='scratch_path')
    return path


def check_options(params):
    """Validate every option; return a normalised copy. Runs before any drill starts."""
    p = dict((option.name, option.default) for option in OPTIONS)
    p.update(dict((k, v) for k, v in params.items() if v is not None))
    kinds = _flat(p['kinds']) or [kind for kind in KINDS
                                  if kind != 'pgbackrest' or p.get('pgbackrest_stanza')]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise BackupError('kinds must be one or more of %s; got %r'
                          % (', '.join(KINDS), unknown or kinds), param='kinds')
    p['kinds'] = [kind for kind in KINDS if kind in kinds]
    for name in ('scratch_path', 'pg_backup_dir', 'redis_backup_dir', 'env_root', 'pg_bin_dir'):
        p[name] = _absolute(p, name)
    if p.get('pg_scratch_socket'):
        p['pg_scratch_socket'] = _absolute(p, 'pg_scratch_socket')
    p['protected_paths'] = [os.path.normpath(path) for path in _flat(p['protected_paths'])]
    p['pg_databases'] = [naming.validate_name('pg_databases', db)
                         for db in _flat(p.get('pg_databases'))] or None
    naming.validate_name('redis_instance', p['redis_instance'])
    naming.validate_name('pg_os_user', p['pg_os_user'])
    targets = []
    for target in _flat(p.get('env_targets')):
        project, sep, environment = target.partition('/')
        if not sep:
            raise BackupError('env_targets entries are project/environment; got %r' % target,
                              param='env_targets')
        targets.append((naming.validate_name('env_targets', project),
                        naming.validate_name('env_targets', environment)))
    p['env_targets'] = targets or None
    if 'pgbackrest' in p['kinds']:
        _check_pgbackrest(p)
    for name, low in (('scratch_reserve_mb', 0), ('pg_scratch_port', 1)):
        value = p[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low \
                or (name == 'pg_scratch_port' and value > 65535):
            raise BackupError('%s must be an integer >= %d; got %r' % (name, low, value),
                              param=name)
    for name in ('timeout', 'lock_timeout'):
        value = p[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise BackupError('%s must be a positive number of seconds; got %r' % (name, value),
                              param=name)
        p[name] = float(value)
    if p.get('redis_sentinel_key') is not None and not isinstance(p['redis_sentinel_key'], str):
        raise BackupError('redis_sentinel_key must be a string', param='redis_sentinel_key')
    return p


def _check_pgbackrest(p):
    if not p.get('pgbackrest_stanza'):
        raise BackupError('the pgbackrest drill needs pgbackrest_stanza', param='pgbackrest_stanza')
    naming.validate_name('pgbackrest_stanza', p['pgbackrest_stanza'])
    naming.validate_name('pgbackrest_marker_db', p['pgbackrest_marker_db'])
    naming.validate_name('pgbackrest_repo_user', p['pgbackrest_repo_user'])
    primary = dict((original, p.get(name)) for name, original in PRIMARY_NAMES.items())
    path = primary.pop(PASSWORD_FILE_OPTION.name)
    if path:
        primary['login_password'] = read_password_file(path, 'pgbackrest_primary_password_file')
    elif not primary.get('login_password'):
        primary['login_password'] = os.environ.get(PASSWORD_ENV) or None
    try:
        p['primary_connection'] = check_connection(primary)
    except BackupError as exc:
        raise BackupError(exc.msg, param='pgbackrest_primary_' + str(exc.param).replace('login_', ''))
