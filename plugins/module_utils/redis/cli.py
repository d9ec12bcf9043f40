# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Redis verbs of the host command ``codeb-backup`` (what cron runs): redis-snapshot,
redis-ship, redis-restore, redis-verify and redis-list. Their flags come from the option
tuples in ``redis.options``, the same ones the modules' argument_spec is built from."""

from __future__ import annotations

import os

from ansible_collections.codeb.backup.plugins.module_utils import ship
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.spec import (
    Option, add_arguments, params_from_args,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.options import (
    CONNECTION_OPTIONS, FORMATS, INFO_OPTIONS, SNAPSHOT_OPTIONS, connection_params, pick,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.snapshot import take_snapshot
from ansible_collections.codeb.backup.plugins.module_utils.redis.verify import verify_snapshots
from ansible_collections.codeb.backup.plugins.module_utils.redis.restore import restore_snapshot
from ansible_collections.codeb.backup.plugins.module_utils.redis.store import list_snapshots
from ansible_collections.codeb.backup.plugins.module_utils.redis.shipping import ship_snapshots

# The host command reads the password from a file (0600) or $REDISCLI_AUTH, never from its
# arguments, which every user of the host can read.
PASSWORD_FILE = Option('login_password_file', type='path', flag_aliases=('password_file',),
                       help='file (0600) holding the password; else $REDISCLI_AUTH is used')
# A command line gives the stop and start commands as one string (split like a shell would,
# no shell runs); the module takes them as lists.
_COMMANDS = tuple(option.replace(type='str', elements=None) for option in
                  pick(SNAPSHOT_OPTIONS, 'stop_command', 'start_command'))
_COMMON = pick(SNAPSHOT_OPTIONS, 'backup_dir', 'instance', 'data_dir', 'timeout',
               'metrics_dir', 'lock_timeout')
_RUN = pick(SNAPSHOT_OPTIONS, 'instance', 'metrics_dir', 'lock_timeout')
_RETENTION = pick(SNAPSHOT_OPTIONS, 'keep_min', 'rdb_max_age_hours', 'aof_keep')
# choices are checked after a comma list is split (see _formats)
_FORMATS = pick(SNAPSHOT_OPTIONS, 'formats')[0].replace(choices=None)
SNAPSHOT_FLAGS = CONNECTION_OPTIONS + (PASSWORD_FILE, _FORMATS) + _COMMON + _RETENTION + pick(
    SNAPSHOT_OPTIONS, 'prune', 'verify_load')
SHIP_FLAGS = pick(SNAPSHOT_OPTIONS, 'backup_dir') + _RUN + _RETENTION
RESTORE_FLAGS = CONNECTION_OPTIONS + (PASSWORD_FILE,) + _COMMON + pick(
    SNAPSHOT_OPTIONS, 'snapshot', 'snapshot_format', 'service_name') + _COMMANDS
VERIFY_FLAGS = pick(SNAPSHOT_OPTIONS, 'backup_dir', 'snapshot_format') + _RUN + (
    pick(SNAPSHOT_OPTIONS, 'snapshot')[0].replace(default='all'),)
LIST_FLAGS = pick(INFO_OPTIONS, 'backup_dir', 'verify')


_SHIP_DESCRIPTION = (
    'Asks the backup host (over SSH, its forced command "codeb-backup receive") which '
    'snapshots it holds and streams the others to it; each is checked (sha256, '
    'redis-check-rdb) there before it enters its manifest. Without --ship-host the backup '
    'root is a directory on this host, and the retention flags apply there.')
_VERIFY_DESCRIPTION = (
    'Marks a snapshot failed_verification only on evidence against it (sha256, size, the '
    'check tool rejecting it); if the check cannot run (tool missing, disk full) the run '
    'fails and no status changes.')


def register_cli(subparsers):
    # verb, help, description, flags, whether it takes the --ship-* flags, handler
    verbs = (
        ('redis-snapshot', 'fresh, checked RDB + AOF snapshot of Redis', None,
         SNAPSHOT_FLAGS, True, _cli_snapshot),
        ('redis-ship', 'ship the snapshots the backup host lacks, verified on arrival',
         _SHIP_DESCRIPTION, SHIP_FLAGS, True, _cli_ship),
        ('redis-restore', 'restore an RDB or AOF snapshot into Redis', None, RESTORE_FLAGS,
         False, _cli_restore),
        ('redis-verify', 're-check Redis snapshots (sha256, redis-check-rdb/-aof)',
         _VERIFY_DESCRIPTION, VERIFY_FLAGS, False, _cli_verify),
        ('redis-list', 'list Redis snapshots (newest first)', None, LIST_FLAGS, False,
         _cli_list),
    )
    for verb, help_text, description, flags, ships, handler in verbs:
        parser = subparsers.add_parser(verb, help=help_text, description=description)
        add_arguments(parser, flags)
        if ships:
            if verb == 'redis-snapshot':
                parser.add_argument('--ship', action='store_true',
                                    help='then ship what the backup host lacks (see redis-ship)')
            ship.add_target_arguments(parser)
        parser.set_defaults(handler=handler)


def _conn_from_args(args):
    params = params_from_args(args, CONNECTION_OPTIONS + (PASSWORD_FILE,))
    password = os.environ.get('REDISCLI_AUTH')
    if params['login_password_file']:
        try:
            with open(params['login_password_file']) as handle:
                password = handle.read().strip()
        except OSError as exc:
            raise BackupError('cannot read --login-password-file: %s' % exc,
                              param='login_password_file')
    params['login_password'] = password
    return connection_params(params)


def _formats(values):
    """``--formats rdb,aof`` and ``--formats rdb --formats aof`` mean the same."""
    names = [name.strip() for value in values for name in value.split(',') if name.strip()]
    for name in names:
        if name not in FORMATS:
            raise BackupError('--formats takes %s; got %r' % (', '.join(FORMATS), name),
                              param='formats')
    return names


def _cli_snapshot(args):
    if args.ship:
        ship.target_from_args(args)  # bad shipping options fail before the snapshot
        if not args.ship_dir:
            raise BackupError('--ship needs --ship-dir', param='ship_dir')
    p = params_from_args(args, SNAPSHOT_FLAGS)
    result = take_snapshot(
        _conn_from_args(args), backup_dir=p['backup_dir'], instance=p['instance'],
        formats=_formats(p['formats']), data_dir=p['data_dir'], timeout=p['timeout'],
        keep_min=p['keep_min'], rdb_max_age_hours=p['rdb_max_age_hours'],
        aof_keep=p['aof_keep'], prune_old=p['prune'], verify_load=p['verify_load'],
        metrics_dir=p['metrics_dir'], lock_timeout=p['lock_timeout'])
    if args.ship:
        result['ship'] = _cli_ship(args)
    return result


def _cli_ship(args):
    if not args.ship_dir:
        raise BackupError('--ship-dir is required: the snapshot directory on the backup host',
                          param='ship_dir')
    p = params_from_args(args, SHIP_FLAGS)
    return ship_snapshots(p['backup_dir'], ship.target_from_args(args), args.ship_dir,
                          instance=p['instance'], metrics_dir=p['metrics_dir'],
                          lock_timeout=p['lock_timeout'], keep_min=p['keep_min'],
                          rdb_max_age_hours=p['rdb_max_age_hours'], aof_keep=p['aof_keep'])


def _cli_restore(args):
    p = params_from_args(args, RESTORE_FLAGS)
    return restore_snapshot(
        _conn_from_args(args), backup_dir=p['backup_dir'], snapshot=p['snapshot'],
        snapshot_format=p['snapshot_format'], instance=p['instance'],
        service_name=p['service_name'], stop_command=p['stop_command'],
        start_command=p['start_command'], data_dir=p['data_dir'], timeout=p['timeout'],
        metrics_dir=p['metrics_dir'], lock_timeout=p['lock_timeout'])


def _cli_verify(args):
    p = params_from_args(args, VERIFY_FLAGS)
    return verify_snapshots(p['backup_dir'], snapshot=p['snapshot'],
                            snapshot_format=p['snapshot_format'], instance=p['instance'],
                            metrics_dir=p['metrics_dir'], lock_timeout=p['lock_timeout'])


def _cli_list(args):
    p = params_from_args(args, LIST_FLAGS)
    return dict(snapshots=list_snapshots(p['backup_dir'], p['verify']))
