# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``codeb-backup drill`` host command (cron or a systemd timer on the backup host)."""

from __future__ import annotations

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.spec import add_arguments, params_from_args
from ansible_collections.codeb.backup.plugins.module_utils.drill.options import KINDS, OPTIONS
from ansible_collections.codeb.backup.plugins.module_utils.drill.run import run_drills


def register_cli(subparsers):
    parser = subparsers.add_parser(
        'drill', help='restore drills: restore backups into scratch space and check them',
        allow_abbrev=False,
        description='Restores the newest backups of each kind (%s) into scratch space '
                    'production never sees, checks them, removes the scratch copies and '
                    'writes metrics kind drill_<kind> per target. Exits 1 if any drill '
                    'failed; the JSON result holds every kind\'s result.' % ', '.join(KINDS))
    add_arguments(parser, OPTIONS)
    parser.set_defaults(handler=_cli_drill)


def _cli_drill(args):
    result = run_drills(params_from_args(args, OPTIONS))
    if result['failed']:  # exit 1, and the JSON still holds every kind's result
        error = BackupError(result['msg'])
        error.details.update((k, v) for k, v in result.items() if k not in ('msg', 'failed'))
        raise error
    return result
