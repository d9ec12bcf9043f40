# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host command's ``codeb-backup env backup|set|restore|list``.

Flags come from the same :mod:`options` as the modules' ``argument_spec``. Key values are
secrets: ``set`` reads them from ``--values-file`` (or stdin), never from the command line.
"""

from __future__ import annotations

import sys

from ansible_collections.codeb.backup.plugins.module_utils.env import envfile, jobs
from ansible_collections.codeb.backup.plugins.module_utils.env import options as opt
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.spec import add_arguments, params_from_args

# What cron runs is the daily backup; the module, without a trigger, logs "manual".
_CLI_TRIGGER = opt.TRIGGER.replace(default='daily')
BACKUP = opt.STORE + (opt.SRC.replace(required=True), _CLI_TRIGGER) + opt.WRITING
SET = opt.STORE + opt.DEST_OPTIONS + opt.WRITING
RESTORE = opt.STORE + (opt.VERSION, opt.DEST.replace(required=True)) + opt.DEST_OPTIONS[1:] \
    + opt.WRITING
LIST = opt.STORE + (opt.VERIFY,)


def _read_values_file(path):
    if path == '-':
        text = sys.stdin.buffer.read()
    else:
        try:
            with open(path, 'rb') as handle:
                text = handle.read()
        except OSError as exc:
            raise BackupError('cannot read values file %s: %s' % (path, exc.strerror),
                              param='values_file')
    values = envfile.parse_bytes(text).to_dict()
    if not values:
        raise BackupError('values file %s holds no KEY=value lines' % path, param='values_file')
    return values


def _strip(result):
    result = dict(result)
    result.pop('diff', None)
    return result


def _cli_backup(args):
    params = params_from_args(args, BACKUP)
    if params['src'] == '-':
        params['src'] = None
        params['content'] = sys.stdin.buffer.read().decode(envfile.ENCODING, envfile.ERRORS)
    return _strip(jobs.backup(check_mode=args.check, **params))


def _cli_set(args):
    params = params_from_args(args, SET)
    return _strip(jobs.set_values(values=_read_values_file(args.values_file),
                                  check_mode=args.check, **params))


def _cli_restore(args):
    return _strip(jobs.restore(check_mode=args.check, **params_from_args(args, RESTORE)))


def _cli_list(args):
    return jobs.listing(**params_from_args(args, LIST))


def _check_flag(parser):
    parser.add_argument('--check', action='store_true', help='only say what would change')


def register_cli(subparsers):
    env = subparsers.add_parser('env', help='versioned backups of app .env files',
                                description='Back up, edit, restore and list versions of an '
                                            'app .env file (master, current, history).')
    sub = env.add_subparsers(dest='env_command', metavar='ACTION')
    sub.required = True

    parser = sub.add_parser('backup', help='record the .env file as a version if it changed')
    add_arguments(parser, BACKUP)
    _check_flag(parser)
    parser.set_defaults(handler=_cli_backup)

    parser = sub.add_parser('set', help='set keys in the current version (values from a file, '
                                        'never the command line) and record a version')
    add_arguments(parser, SET)
    parser.add_argument('--values-file', required=True,
                        help='KEY=value lines to set ("-": stdin); secrets stay off the '
                             'command line')
    _check_flag(parser)
    parser.set_defaults(handler=_cli_set)

    parser = sub.add_parser('restore', help='write a version to the app .env file atomically')
    add_arguments(parser, RESTORE)
    _check_flag(parser)
    parser.set_defaults(handler=_cli_restore)

    parser = sub.add_parser('list', help='list versions (time, trigger, sha256, changed keys)')
    add_arguments(parser, LIST)
    parser.set_defaults(handler=_cli_list)
