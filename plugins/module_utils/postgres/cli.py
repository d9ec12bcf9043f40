# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``codeb-backup pg-snapshot`` and ``pg-snapshot-list`` host commands, built from the
same option definitions as the ``pg_snapshot`` module."""

from __future__ import annotations

from ansible_collections.codeb.backup.plugins.module_utils import spec
from ansible_collections.codeb.backup.plugins.module_utils.postgres.connection import (
    PASSWORD_ENV, PASSWORD_FILE_OPTION, cli_password)
from ansible_collections.codeb.backup.plugins.module_utils.postgres.options import (
    INFO_OPTIONS, MODULE_OPTIONS)
from ansible_collections.codeb.backup.plugins.module_utils.postgres.snapshot import run_state
from ansible_collections.codeb.backup.plugins.module_utils.postgres.store import list_snapshots

SNAPSHOT_CLI_OPTIONS = MODULE_OPTIONS + (PASSWORD_FILE_OPTION,)


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
