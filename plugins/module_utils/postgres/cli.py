# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``codeb-backup pg-snapshot`` and ``pg-snapshot-list`` host commands, built from the
same option definitions as the ``pg_snapshot`` module."""

from __future__ import annotations

from ansible_collections.codeb.backup.plugins.module_utils import ship, spec
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.postgres.connection import (
    CONNECTION_OPTIONS, PASSWORD_ENV, PASSWORD_FILE_OPTION, cli_password)
from ansible_collections.codeb.backup.plugins.module_utils.postgres.options import (
    INFO_OPTIONS, MODULE_OPTIONS, SNAPSHOT_OPTIONS)
from ansible_collections.codeb.backup.plugins.module_utils.postgres.shipping import ship_snapshots
from ansible_collections.codeb.backup.plugins.module_utils.postgres.snapshot import run_state
from ansible_collections.codeb.backup.plugins.module_utils.postgres.store import list_snapshots

SNAPSHOT_CLI_OPTIONS = MODULE_OPTIONS + (PASSWORD_FILE_OPTION,)
_BY_NAME = dict((o.name, o) for o in SNAPSHOT_OPTIONS + CONNECTION_OPTIONS)
# pg-ship: the local store, which database (default all), the retention a same-host
# backup root applies, the metrics and the lock; the --ship-* flags come from ship.
SHIP_FLAGS = (INFO_OPTIONS[0],) + tuple(_BY_NAME[n] for n in (
    'backup_dir', 'keep_days', 'keep_min', 'lock_timeout', 'metrics_dir', 'pg_bin_dir'))
_SHIP_DESCRIPTION = (
    'Asks the backup host (over SSH, its forced command "codeb-backup receive --accept '
    'pg_snapshot") which snapshots it holds and streams the others to it; each is checked '
    'there (sha256, zstd -t, pg_restore --list) before it enters the manifest of its '
    'snapshot store, whose own retention (--option pg_snapshot.keep_days=N) then runs. '
    'Without --ship-host the backup root is a directory on this host, and the retention '
    'flags apply there.')


def cli_params(args):
    """The core's parameters from parsed ``pg-snapshot`` arguments (the password from its
    file or the environment)."""
    params = spec.params_from_args(args, SNAPSHOT_CLI_OPTIONS)
    params['login_password'] = cli_password(args)
    params.pop(PASSWORD_FILE_OPTION.name)
    return params


def _cli_snapshot(args):
    return run_state(cli_params(args))


def _cli_list(args):
    snapshots = list_snapshots(args.backup_dir, args.database)
    return dict(changed=False, backup_dir=args.backup_dir, snapshots=snapshots,
                size_bytes=sum(s.get('size_bytes') or 0 for s in snapshots))


def _cli_ship(args):
    if not args.ship_dir:
        raise BackupError('--ship-dir is required: the snapshot directory on the backup host',
                          param='ship_dir')
    p = spec.params_from_args(args, SHIP_FLAGS)
    return ship_snapshots(p['backup_dir'], ship.target_from_args(args), args.ship_dir,
                          database=p['database'] or None, metrics_dir=p['metrics_dir'],
                          lock_timeout=p['lock_timeout'], keep_days=p['keep_days'],
                          keep_min=p['keep_min'], pg_bin_dir=p['pg_bin_dir'])


def register_cli(subparsers):
    cmd = subparsers.add_parser(
        'pg-snapshot', help='snapshot, verify, restore or prune one PostgreSQL database',
        allow_abbrev=False,
        description='Per-database pg_dump snapshots with manifest, sha256, verification, '
                    'restore-by-swap and retention. The password comes from '
                    '--login-password-file (mode 0600), $%s or ~/.pgpass; '
                    'never from the command line.' % PASSWORD_ENV)
    spec.add_arguments(cmd, SNAPSHOT_CLI_OPTIONS)
    cmd.set_defaults(handler=_cli_snapshot)

    lst = subparsers.add_parser('pg-snapshot-list', help='list PostgreSQL snapshots',
                                allow_abbrev=False,
                                description='List the snapshots in the manifest, newest first.')
    spec.add_arguments(lst, INFO_OPTIONS)
    lst.set_defaults(handler=_cli_list)

    shp = subparsers.add_parser('pg-ship', allow_abbrev=False,
                                help='ship the snapshots the backup host lacks, verified on '
                                     'arrival', description=_SHIP_DESCRIPTION)
    spec.add_arguments(shp, SHIP_FLAGS)
    ship.add_target_arguments(shp)
    shp.set_defaults(handler=_cli_ship)
