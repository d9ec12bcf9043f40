# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host command's ``codeb-backup api-key add|revoke|list``, ``serve-api`` and ``status``."""

from __future__ import annotations

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.spec import Option, add_arguments, params_from_args
from ansible_collections.codeb.backup.plugins.module_utils.status import config as status_config
from ansible_collections.codeb.backup.plugins.module_utils.status.keys import KeyStore

KEYS_FILE = Option('keys_file', type='path', default=status_config.DEFAULT_KEYS_FILE,
                   help='the key store (JSON, 0600; only sha256 digests of the keys)')
CONFIG = Option('config', type='path', default=status_config.DEFAULT_CONFIG_PATH,
                help='the status API configuration (JSON)')
ADD = (Option('team', required=True, help='the team the key answers for'),
       Option('role', required=True, choices=status_config.ROLES,
              help='viewer: one project at a time; admin: also every project of the team'),
       Option('name', help='what the key is for (a name, e.g. the tool using it)'),
       KEYS_FILE)
REVOKE = (Option('id', required=True, help='the id of the key (see api-key list)'), KEYS_FILE)
LIST = (KEYS_FILE,)
SERVE = (CONFIG,
         Option('check', type='bool', default=False,
                help='only validate the configuration and print what would be served '
                     '(the role checks a new configuration with this before installing it)'))
STATUS = (Option('project', required=True, help='the project of the configuration'),
          Option('tool', default='backup_status', choices=('backup_status', 'backup_list'),
                 help='which answer'),
          CONFIG)


def _add(args):
    params = params_from_args(args, ADD)
    return KeyStore(params['keys_file']).add(params['team'], params['role'], params['name'])


def _revoke(args):
    params = params_from_args(args, REVOKE)
    return KeyStore(params['keys_file']).revoke(params['id'])


def _list(args):
    params = params_from_args(args, LIST)
    return {'keys_file': params['keys_file'], 'keys': KeyStore(params['keys_file']).list()}


def _serve(args):
    params = params_from_args(args, SERVE)
    config = status_config.load_config(params['config'])
    if params['check']:
        return {'changed': False, 'config': params['config'],
                'listen': '%s:%d' % (config['listen_host'], config['listen_port']),
                'tls': bool(config['tls_certfile']), 'projects': sorted(config['projects'])}
    try:
        import uvicorn
    except ImportError:
        raise BackupError('serve-api needs uvicorn (Debian: python3-uvicorn)', param='uvicorn')
    from ansible_collections.codeb.backup.plugins.module_utils.status.app import create_app
    uvicorn.run(create_app(config), host=config['listen_host'], port=config['listen_port'],
                ssl_certfile=config['tls_certfile'], ssl_keyfile=config['tls_keyfile'],
                access_log=False, server_header=False, log_level='warning')
    return {'changed': False, 'msg': 'the status API on %s:%d stopped'
            % (config['listen_host'], config['listen_port'])}


def _status(args):
    params = params_from_args(args, STATUS)
    config = status_config.load_config(params['config'])
    from ansible_collections.codeb.backup.plugins.module_utils.status.app import LazyFacts, answer
    return answer(LazyFacts(config), config, params['tool'], params['project'])


def register_cli(subparsers):
    parser = subparsers.add_parser('api-key', help='keys of the backup status API',
                                   description='Create, revoke and list the status API\'s keys. '
                                               'A key is printed once, by add; the store holds '
                                               'only its sha256.')
    sub = parser.add_subparsers(dest='api_key_command', metavar='ACTION')
    sub.required = True
    for name, options, handler, text in (
            ('add', ADD, _add, 'create a key and print it (once)'),
            ('revoke', REVOKE, _revoke, 'revoke a key (takes effect without a restart)'),
            ('list', LIST, _list, 'list the keys (no digests)')):
        action = sub.add_parser(name, help=text)
        add_arguments(action, options)
        action.set_defaults(handler=handler)

    parser = subparsers.add_parser('serve-api', help='run the backup status API (blocks)',
                                   description='Serve POST /api/tool and GET /healthz with '
                                               'uvicorn, as the configuration says.')
    add_arguments(parser, SERVE)
    parser.set_defaults(handler=_serve)

    parser = subparsers.add_parser('status', help='print what the status API answers for a project',
                                   description='The JSON the status API answers, computed here '
                                               'from the same facts (no key needed: this is '
                                               'the backup host).')
    add_arguments(parser, STATUS)
    parser.set_defaults(handler=_status)
