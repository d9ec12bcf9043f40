# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The core of the ``redis_persistence`` module: CONFIG SET the persistence settings that
differ from the live values, compared the way Redis reports them."""

from __future__ import annotations

import re

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.redis.connection import (
    connect, decode_map, redis,
)


PERSISTENCE_SETTINGS = ('appendonly', 'appendfsync', 'auto-aof-rewrite-percentage',
                        'auto-aof-rewrite-min-size', 'aof-use-rdb-preamble', 'save', 'dir',
                        'dbfilename', 'appenddirname', 'appendfilename')
RESTART_ONLY = ('appenddirname', 'appendfilename', 'dir')
_MEMORY_SETTINGS = ('auto-aof-rewrite-min-size',)


# Values Redis accepts for the enumerated settings; checked before anything is set, so
# check mode predicts exactly what a real run would do and a bad value changes nothing.
_CHOICES = {'appendonly': ('yes', 'no'), 'aof-use-rdb-preamble': ('yes', 'no'),
            'appendfsync': ('always', 'everysec', 'no')}


def normalize_setting(name, value):
    """Canonical string form of a persistence setting, as CONFIG GET reports it; a value
    Redis would refuse raises BackupError naming the setting."""
    try:
        text = _normalize(name, value)
    except (TypeError, ValueError, KeyError):
        raise BackupError('settings: %s has a value Redis does not accept: %r' % (name, value),
                          param='settings')
    if name in _CHOICES and text not in _CHOICES[name]:
        raise BackupError('settings: %s must be one of %s; got %r'
                          % (name, ', '.join(_CHOICES[name]), value), param='settings')
    if name == 'auto-aof-rewrite-percentage' and not (text.isdigit()):
        raise BackupError('settings: auto-aof-rewrite-percentage must be an integer >= 0; got %r'
                          % (value,), param='settings')
    return text


def _normalize(name, value):
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if name == 'save':
        if value in (None, '', [], '""'):
            return ''
        if isinstance(value, (list, tuple)):
            flat = []
            for point in value:
                if isinstance(point, dict):
                    flat += [point['seconds'], point['changes']]
                elif isinstance(point, (list, tuple)):
                    flat += list(point)
                else:
                    flat += str(point).split()
            return ' '.join(str(int(v)) for v in flat)
        return ' '.join(str(int(v)) for v in str(value).split())
    if name in _MEMORY_SETTINGS:
        return str(parse_memory(name, value))
    return str(value)


_UNITS = {'': 1, 'b': 1, 'k': 1000, 'kb': 1024, 'm': 1000 ** 2, 'mb': 1024 ** 2,
          'g': 1000 ** 3, 'gb': 1024 ** 3}


def parse_memory(name, value):
    match = re.match(r'\A\s*(\d+)\s*([a-zA-Z]*)\s*\Z', str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise BackupError('%s must be a size like 64mb; got %r' % (name, value), param='settings')
    return int(match.group(1)) * _UNITS[match.group(2).lower()]


def apply_settings(conn, settings, check_mode=False):
    """CONFIG SET the persistence ``settings`` that differ from the live values. Settings
    Redis cannot change live are reported in ``restart_required`` instead."""
    if not isinstance(settings, dict):
        raise BackupError('settings must be a dict of redis.conf persistence settings',
                          param='settings')
    unknown = sorted(set(settings) - set(PERSISTENCE_SETTINGS))
    if unknown:
        raise BackupError('settings %s are not persistence settings this module manages (%s)'
                          % (', '.join(unknown), ', '.join(PERSISTENCE_SETTINGS)),
                          param='settings')
    desired = {k: normalize_setting(k, v) for k, v in settings.items()}
    client = connect(conn)
    before, changes, restart = {}, [], []
    for name in sorted(desired):
        current = decode_map(client.config_get(name)).get(name)
        if current is None:
            raise BackupError('Redis does not know setting %r' % name, param='settings')
        before[name] = normalize_setting(name, current)
        if before[name] == desired[name]:
            continue
        if name in RESTART_ONLY:
            restart.append(name)
        else:
            changes.append(name)
    if not check_mode:
        for done, name in enumerate(changes):
            try:
                client.config_set(name, desired[name])
            except redis.exceptions.ResponseError as exc:
                # the settings set before this one stay set: say so
                raise BackupError('CONFIG SET %s %r failed: %s%s' % (
                    name, desired[name], exc,
                    ' (already set live: %s)' % ', '.join(changes[:done]) if done else ''),
                    param='settings', changed=bool(done), applied=changes[:done])
    after = dict(before)
    after.update({k: desired[k] for k in changes + restart})
    # changed: something was set live; a setting that waits for a restart is not written
    # here (restart_required says so, and the caller restarts)
    return dict(changed=bool(changes), applied=changes, restart_required=restart,
                before=before, after=after)
