# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host command ``codeb-backup``: what cron runs, without a control node.

Each subsystem module in module_utils exposes ``register_cli(subparsers)``, adding its
sub-commands; each sub-command's handler returns a JSON-serialisable result dict. The
same core functions serve the Ansible modules, so nothing is implemented twice.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error

# module_utils modules (dotted paths below module_utils) that contribute sub-commands, in
# help order.
SUBSYSTEMS = (
    'postgres.cli',
    'postgres.pgbackrest',
    'env.cli',
    'redis.cli',
    'bluegreen.cli',
    'drill.cli',
    'monitor.cli',
    'status.cli',
    'ship',  # last: its help lists the channels the others registered
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog='codeb-backup',
        description='codeb.backup host command: snapshots, verification, restore and '
                    'retention for PostgreSQL, Redis and .env files. Prints a JSON result.')
    subparsers = parser.add_subparsers(dest='command', metavar='COMMAND')
    subparsers.required = True
    for name in SUBSYSTEMS:
        module = importlib.import_module(
            'ansible_collections.codeb.backup.plugins.module_utils.' + name)
        module.register_cli(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except Exception as exc:  # cron reads the JSON and the exit code, whatever went wrong
        error = as_backup_error(exc, 'codeb-backup %s' % args.command)
        # One result, on stdout, whatever happened: its msg says what failed.
        sys.stdout.write(json.dumps(dict(failed=True, **error.as_result()), sort_keys=True,
                                    default=str) + '\n')
        return 1
    sys.stdout.write(json.dumps(result, indent=2, sort_keys=True, default=str) + '\n')
    return 0
