# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status API's configuration file (JSON, written by the status_api role).

:func:`load_config` returns a plain dict with every key filled (defaults applied) and
``projects`` as a dict name -> project. A wrong key or value is refused with a
``BackupError`` naming the key, so a typo never silently becomes a default.
"""

from __future__ import annotations

import json

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.naming import validate_name

DEFAULT_CONFIG_PATH = '/etc/codeb-backup/status-api.json'
DEFAULT_KEYS_FILE = '/etc/codeb-backup/status-api-keys.json'
ROLES = ('viewer', 'admin')

DEFAULTS = {
    'listen_host': '127.0.0.1',
    'listen_port': 8470,
    'tls_certfile': None,
    'tls_keyfile': None,
    'keys_file': DEFAULT_KEYS_FILE,
    'log_file': None,
    'prometheus_url': 'http://127.0.0.1:9090',
    'prometheus_timeout': 5,
    'cache_seconds': 10,
    'rate_limit_failures': 10,
    'rate_limit_window': 60,
    'pg_snapshot_dir': '/opt/codeb/db-backup/postgresql',
    'redis_backup_dir': '/opt/codeb/db-backup/redis',
    'env_root': '/opt/codeb/env-backup',
    'pgbackrest_stanza': 'codeb',
    'projects': [],
}
_STRINGS = ('listen_host', 'keys_file', 'prometheus_url', 'pg_snapshot_dir', 'redis_backup_dir',
            'env_root')
_OPTIONAL_STRINGS = ('tls_certfile', 'tls_keyfile', 'log_file')
# key -> (smallest allowed value, integers only)
_NUMBERS = {
    'listen_port': (1, True),
    'prometheus_timeout': (0.001, False),
    'cache_seconds': (0, False),
    'rate_limit_failures': (1, True),
    'rate_limit_window': (0.001, False),
}
_PROJECT_KEYS = ('name', 'team', 'databases', 'redis_instance', 'env_project')


def validate_team(param, value):
    """A team name: a safe name without ``_``, which separates the parts of an API key."""
    validate_name(param, value)
    if '_' in value:
        raise BackupError('%s %r must not contain "_": it separates the parts of an API key '
                          '(codeb_{team}_{role}_{token})' % (param, value), param=param)
    return value


def _number(key, value):
    low, integer = _NUMBERS[key]
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < low \
            or (key == 'listen_port' and value > 65535):
        raise BackupError('%s must be %s >= %s%s; got %r' % (
            key, 'an integer' if integer else 'a number', low,
            ' and <= 65535' if key == 'listen_port' else '', value), param=key)
    return value


def _project(index, entry):
    where = 'projects[%d]' % index
    if not isinstance(entry, dict):
        raise BackupError('%s must be a mapping; got %r' % (where, entry), param='projects')
    unknown = sorted(set(entry) - set(_PROJECT_KEYS))
    if unknown:
        raise BackupError('%s has unknown keys %s; allowed: %s'
                          % (where, ', '.join(unknown), ', '.join(_PROJECT_KEYS)), param='projects')
    name = validate_name('%s.name' % where, entry.get('name'))
    project = {
        'name': name,
        'team': validate_team('%s.team' % where, entry.get('team')),
        'databases': entry.get('databases', [name]),
        'redis_instance': entry.get('redis_instance'),
        'env_project': validate_name('%s.env_project' % where, entry.get('env_project', name)),
    }
    if not isinstance(project['databases'], list) or not project['databases']:
        raise BackupError('%s.databases must be a non-empty list of database names; got %r'
                          % (where, project['databases']), param='projects')
    project['databases'] = [validate_name('%s.databases' % where, db) for db in project['databases']]
    if project['redis_instance'] is not None:
        validate_name('%s.redis_instance' % where, project['redis_instance'])
    return project


def validate_config(raw):
    """The configuration with defaults applied, from the decoded JSON ``raw``."""
    if not isinstance(raw, dict):
        raise BackupError('the status API configuration must be a JSON object', param='config')
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise BackupError('unknown configuration keys: %s; allowed: %s'
                          % (', '.join(unknown), ', '.join(sorted(DEFAULTS))), param=unknown[0])
    config = dict(DEFAULTS)
    config.update(raw)
    for key in _STRINGS:
        if not isinstance(config[key], str) or not config[key]:
            raise BackupError('%s must be a non-empty string; got %r' % (key, config[key]), param=key)
    for key in _OPTIONAL_STRINGS:
        if config[key] is not None and (not isinstance(config[key], str) or not config[key]):
            raise BackupError('%s must be a path or null; got %r' % (key, config[key]), param=key)
    for key in _NUMBERS:
        _number(key, config[key])
    if bool(config['tls_certfile']) != bool(config['tls_keyfile']):
        raise BackupError('tls_certfile and tls_keyfile go together: set both or neither',
                          param='tls_keyfile' if config['tls_certfile'] else 'tls_certfile')
    if not config['prometheus_url'].startswith(('http://', 'https://')):
        raise BackupError('prometheus_url must start with http:// or https://; got %r'
                          % config['prometheus_url'], param='prometheus_url')
    validate_name('pgbackrest_stanza', config['pgbackrest_stanza'])
    if not isinstance(config['projects'], list):
        raise BackupError('projects must be a list of projects', param='projects')
    projects = {}
    for index, entry in enumerate(config['projects']):
        project = _project(index, entry)
        if project['name'] in projects:
            raise BackupError('project %r is listed twice' % project['name'], param='projects')
        projects[project['name']] = project
    config['projects'] = projects
    return config


def load_config(path=DEFAULT_CONFIG_PATH):
    """The configuration in the JSON file ``path``, validated, with defaults applied."""
    try:
        with open(path, 'rb') as handle:
            raw = json.loads(handle.read().decode('utf-8'))
    except OSError as exc:
        raise BackupError('cannot read the status API configuration %s: %s'
                          % (path, exc.strerror), param='config')
    except ValueError as exc:
        raise BackupError('the status API configuration %s is not valid JSON: %s'
                          % (path, exc), param='config')
    return validate_config(raw)
