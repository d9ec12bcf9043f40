# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``codeb-backup collect-metrics`` host command (cron, every minute)."""

from __future__ import annotations

import os

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.postgres.connection import (
    PASSWORD_ENV, read_password_file)
from ansible_collections.codeb.backup.plugins.module_utils.spec import add_arguments, params_from_args
from ansible_collections.codeb.backup.plugins.module_utils.monitor.collect import collect_metrics
from ansible_collections.codeb.backup.plugins.module_utils.monitor.options import (
    OPTIONS, PG_NAMES, REDIS_NAMES)

_DESCRIPTION = (
    'Reads pgBackRest (--pgbackrest-stanza), PostgreSQL WAL archiving and replication '
    '(--postgres) and Redis persistence (--redis) and writes one textfile per source '
    '(codeb_backup_collector_<source>.prom) for node_exporter. A source that fails gets '
    'its file with codeb_backup_collector_source_up 0; the command then exits 1. '
    'Passwords come from --postgres-password-file / $%s and --redis-password-file / '
    '$REDISCLI_AUTH, never from the command line.' % PASSWORD_ENV)


def register_cli(subparsers):
    parser = subparsers.add_parser(
        'collect-metrics', help='write pgBackRest, PostgreSQL and Redis facts for node_exporter',
        description=_DESCRIPTION, allow_abbrev=False)
    add_arguments(parser, OPTIONS)
    parser.set_defaults(handler=_cli_collect)


def _password(path, param, env):
    if path:
        return read_password_file(path, param)
    return os.environ.get(env) or None


def cli_params(args):
    """The collector's parameters from parsed arguments, with each connection's options
    under the names its subsystem's connection layer takes."""
    params = params_from_args(args, OPTIONS)
    pg = dict((original, params.pop(name)) for name, original in PG_NAMES.items())
    pg['login_password'] = _password(pg.pop('login_password_file'), 'postgres_password_file',
                                     PASSWORD_ENV)
    redis = dict((original, params.pop(name)) for name, original in REDIS_NAMES.items())
    redis['login_password'] = _password(redis.pop('login_password_file'), 'redis_password_file',
                                        'REDISCLI_AUTH')
    params.update(postgres_connection=pg, redis_connection=redis)
    if params['redis'] and not params['redis_name']:
        socket = redis['login_unix_socket']
        params['redis_name'] = os.path.splitext(os.path.basename(socket))[0] if socket \
            else str(redis['login_port'])
    if params['pgbackrest_check'] and not params['pgbackrest_stanza']:
        raise BackupError('--pgbackrest-check needs --pgbackrest-stanza', param='pgbackrest_check')
    return params


def _cli_collect(args):
    return collect_metrics(cli_params(args))
