# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Redis subsystem's constants and options, each defined once.

The modules (``redis_snapshot``, ``redis_snapshot_info``, ``redis_persistence``) build
their ``argument_spec`` from these tuples and the host command (``redis.cli``) its flags,
so a name, an alias, a type or a default lives here and nowhere else in the code. The
documentation of the shared options is the doc fragment ``codeb.backup.redis``.
"""

from __future__ import annotations

import os

from ansible_collections.codeb.backup.plugins.module_utils import metrics, naming
from ansible_collections.codeb.backup.plugins.module_utils.locking import lock_timeout_option
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.spec import Option

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
DEFAULT_LOCK_TIMEOUT = 60
POLL = 0.05
SAVE_POLL = 0.01  # INFO persistence while a BGSAVE runs: cheap, and every tick is wall time

CONNECTION_OPTIONS = (
    Option('login_host', default='127.0.0.1', flag_aliases=('host',),
           help='Redis host, ignored with --login-unix-socket'),
    Option('login_port', type='int', default=6379, flag_aliases=('port',), help='Redis port'),
    Option('login_user', flag_aliases=('user',), help='ACL user name'),
    # never a flag: the host command reads it from --login-password-file or $REDISCLI_AUTH
    Option('login_password', no_log=True),
    Option('login_unix_socket', type='path', flag_aliases=('socket',),
           help='Redis unix socket, instead of host and port'),
    Option('tls', type='bool', default=False, help='connect with TLS'),
    Option('validate_certs', type='bool', default=True,
           help='verify the server certificate with --tls'),
    Option('ca_certs', type='path', help='CA bundle for --tls'),
)
CONNECTION_KEYS = tuple(option.name for option in CONNECTION_OPTIONS)
# connect() takes one more key than the modules offer: how long a connection attempt waits
CONNECTION_DEFAULTS = dict(((o.name, o.default) for o in CONNECTION_OPTIONS),
                           connect_timeout=10.0)

BACKUP_DIR = Option('backup_dir', type='path', default=DEFAULT_BACKUP_DIR,
                    help='snapshot directory')
INSTANCE = Option('instance', default=DEFAULT_INSTANCE,
                  help='instance name for metrics and messages')
SNAPSHOT_FORMAT = Option('snapshot_format', choices=FORMATS, flag_aliases=('format',),
                         help='only rdb or only aof snapshots')
METRICS_DIR = metrics.METRICS_DIR_OPTION
LOCK_TIMEOUT = lock_timeout_option(DEFAULT_LOCK_TIMEOUT, 'the same instance')
RETENTION_OPTIONS = (
    Option('keep_min', type='int', default=DEFAULT_KEEP_MIN,
           help='never delete the newest this many good RDB snapshots'),
    Option('rdb_max_age_hours', type='int', default=DEFAULT_RDB_MAX_AGE_HOURS,
           help='delete RDB snapshots older than this'),
    Option('aof_keep', type='int', default=DEFAULT_AOF_KEEP,
           help='how many AOF snapshots to keep'),
)
SNAPSHOT = Option('snapshot', default='latest',
                  help='latest, a file name or a timestamp (verify: also all)')
STATES = ('present', 'restored', 'verified')

# redis_snapshot's options besides the connection; the host command takes subsets of them
SNAPSHOT_OPTIONS = (
    Option('state', default='present', choices=STATES, cli=False),
    Option('formats', type='list', elements='str', default=list(FORMATS), choices=FORMATS,
           help='rdb and/or aof (repeat the flag, or a comma list)'),
    BACKUP_DIR, INSTANCE, SNAPSHOT, SNAPSHOT_FORMAT,
    Option('service_name', help='systemd unit to stop and start (e.g. redis-server)'),
    Option('stop_command', type='list', elements='str',
           help='command that stops Redis (default SHUTDOWN NOSAVE)'),
    Option('start_command', type='list', elements='str', help='command that starts Redis'),
    Option('data_dir', type='path',
           help='Redis data directory if not the one CONFIG GET dir says'),
    # no flag: unset means "ask the running instance", which a --x/--no-x pair cannot say
    Option('appendonly', type='bool', cli=False),
    Option('verify_load', type='bool', default=True,
           help='load AOF snapshots into a scratch redis-server to count their keys'),
    Option('timeout', type='float', default=float(DEFAULT_TIMEOUT),
           help='seconds to wait for saves, rewrites, stops and starts'),
) + RETENTION_OPTIONS + (
    Option('prune', type='bool', default=True, help='apply retention after a snapshot'),
    METRICS_DIR, LOCK_TIMEOUT,
)

INFO_OPTIONS = (
    BACKUP_DIR, SNAPSHOT_FORMAT,
    Option('verify', type='bool', default=False, help='recompute each sha256'),
)

PERSISTENCE_OPTIONS = (
    Option('settings', type='dict', required=True),
)


def pick(options, *names):
    """The options called ``names`` out of ``options``, in that order."""
    by_name = dict((option.name, option) for option in options)
    return tuple(by_name[name] for name in names)


def connection_params(params):
    """The connection options out of a module's (or the host command's) parameters."""
    return dict((key, params.get(key)) for key in CONNECTION_KEYS)


def validate_common(backup_dir, instance, formats=None, timeout=None):
    """The checks every entry point (module or host command) runs on the shared options."""
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
