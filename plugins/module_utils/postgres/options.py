# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of PostgreSQL snapshots, defined once for the ``pg_snapshot`` module and
the ``codeb-backup pg-snapshot`` host command, and the checks both entry points share.

Types and choices are checked by Ansible's argument spec for the module and by argparse
for the host command; ``check_options`` checks what neither can (names, paths, ranges,
combinations) and also the types, because the core is called directly too (tests,
playbook-free scripts)."""

from __future__ import annotations

import os
import re

from ansible_collections.codeb.backup.plugins.module_utils import metrics, naming
from ansible_collections.codeb.backup.plugins.module_utils.locking import lock_timeout_option
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.postgres.connection import (
    CONNECTION_OPTIONS, check_connection)
from ansible_collections.codeb.backup.plugins.module_utils.spec import Option

DEFAULT_BACKUP_DIR = '/opt/codeb/db-backup/postgresql'
FORMATS = ('custom', 'directory')
STATES = ('present', 'verified', 'restored', 'pruned')
# Chosen by bench/pg_snapshot_bench.py (docs/benchmarks.md): zstd level 1 on an
# uncompressed custom-format stream was the fastest candidate and smaller than pg_dump's
# default gzip (levels 3 and 6 were slower and no smaller). jobs=1: on the 2-core bench
# machine a streamed serial restore was as fast as jobs=2 (33.0 s vs 34.2 s) and needs no
# scratch space; jobs>1 decompresses to a temporary file so pg_restore -j can seek.
DEFAULT_COMPRESSION = 'zstd:1'
DEFAULT_FORMAT = 'custom'
DEFAULT_JOBS = 1
DEFAULT_KEEP_DAYS = 7
DEFAULT_KEEP_MIN = 3
DEFAULT_LOCK_TIMEOUT = 60.0
KIND = 'pg_snapshot'
KIND_VERIFY = 'pg_snapshot_verify'
KIND_RESTORE = 'pg_snapshot_restore'
KIND_PRUNE = 'pg_snapshot_prune'
# Safety snapshots (taken by deploy and rollback) report under their own metrics kind, so
# their success can never mask a failing scheduled job of the same database.
PURPOSES = {'scheduled': KIND, 'safety': 'pg_snapshot_safety'}
DEFAULT_PURPOSE = 'scheduled'
# A restore replaces the target by renaming databases: never a template (every CREATE
# DATABASE would clone the snapshot), and the maintenance database only when asked for.
TEMPLATE_DATABASES = ('template0', 'template1')
POSTGRES_DATABASE = 'postgres'

_COMPRESSION_RE = re.compile(r'\A(none|gzip|zstd)(?::(\d{1,2}))?\Z')

DATABASE_OPTION = Option('database', required=True, aliases=('db', 'name'),
                         help='database whose snapshots this run makes, checks, restores '
                              'or prunes')
BACKUP_DIR_OPTION = Option('backup_dir', type='path', default=DEFAULT_BACKUP_DIR,
                           help='directory of the snapshots and their manifest.json')

SNAPSHOT_OPTIONS = (
    Option('state', default='present', choices=STATES,
           help='present: snapshot then prune; verified: re-check; restored: restore by swap;'
                ' pruned: retention only'),
    DATABASE_OPTION,
    Option('target_database', help='restore into this database (default: database)'),
    Option('snapshot', default='latest',
           help='latest, all (state verified only), a snapshot file name or its timestamp'),
    BACKUP_DIR_OPTION,
    Option('format', default=DEFAULT_FORMAT, choices=FORMATS, help='pg_dump archive format'),
    Option('compression', default=DEFAULT_COMPRESSION,
           help='none, gzip[:1-9] or zstd[:1-19]'),
    Option('jobs', type='int', default=DEFAULT_JOBS,
           help='parallel pg_dump (directory format) and pg_restore workers'),
    Option('purpose', default=DEFAULT_PURPOSE, choices=tuple(sorted(PURPOSES)),
           help='scheduled (metrics kind pg_snapshot) or safety (deploy/rollback snapshots, '
                'metrics kind pg_snapshot_safety)'),
    Option('allow_postgres_database', type='bool', default=False,
           help='allow state restored to replace the postgres database'),
    Option('keep_days', type='int', default=DEFAULT_KEEP_DAYS,
           help='delete snapshots older than this many days'),
    Option('keep_min', type='int', default=DEFAULT_KEEP_MIN,
           help='but always keep this many newest good ones'),
    lock_timeout_option(DEFAULT_LOCK_TIMEOUT, 'the same database'),
    metrics.METRICS_DIR_OPTION,
)
# Everything the pg_snapshot module takes.
MODULE_OPTIONS = SNAPSHOT_OPTIONS + CONNECTION_OPTIONS
# The pg_snapshot_info module and the pg-snapshot-list command: read the manifest only.
INFO_OPTIONS = (DATABASE_OPTION.replace(required=False, help='only this database'),
                BACKUP_DIR_OPTION)


def parse_compression(value):
    """``none`` | ``gzip[:0-9]`` | ``zstd[:1-19]`` -> ``(method, level)``."""
    match = _COMPRESSION_RE.match(str(value or '').strip().lower())
    if not match:
        raise BackupError("compression must be one of none, gzip, gzip:N (N 1-9), zstd, zstd:N "
                          "(N 1-19); got %r" % (value,), param='compression')
    method, level = match.group(1), match.group(2)
    if method == 'none':
        if level is not None:
            raise BackupError('compression none takes no level; got %r' % (value,),
                              param='compression')
        return 'none', 0
    level = int(level) if level is not None else (6 if method == 'gzip' else 3)
    limit = 9 if method == 'gzip' else 19
    if not 1 <= level <= limit:
        raise BackupError('compression %s level must be 1-%d; got %r' % (method, limit, value),
                          param='compression')
    return method, level


def check_backup_dir(value):
    """An absolute ``backup_dir`` without ``..``, normalised."""
    backup_dir = value or DEFAULT_BACKUP_DIR
    if not isinstance(backup_dir, str) or not os.path.isabs(backup_dir) \
            or '..' in backup_dir.split(os.sep):
        raise BackupError('backup_dir must be an absolute path without ".."; got %r'
                          % (backup_dir,), param='backup_dir')
    return os.path.normpath(backup_dir)


def _choice(p, name, choices, default):
    value = p.get(name) or default
    if value not in choices:
        raise BackupError('%s must be one of %s; got %r'
                          % (name, ', '.join(sorted(choices)), value), param=name)
    return value


def check_options(params):
    """Validate the options every state shares; return a normalised copy."""
    p = check_connection(params)
    naming.validate_name('database', p.get('database'))
    if p.get('target_database') not in (None, ''):
        naming.validate_name('target_database', p['target_database'])
        p['_target_param'] = 'target_database'
    else:
        p['target_database'] = p['database']
        p['_target_param'] = 'database'
    p['purpose'] = _choice(p, 'purpose', PURPOSES, DEFAULT_PURPOSE)
    p['backup_dir'] = check_backup_dir(p.get('backup_dir'))
    p['format'] = fmt = _choice(p, 'format', FORMATS, DEFAULT_FORMAT)
    method, level = parse_compression(p.get('compression') or DEFAULT_COMPRESSION)
    if fmt == 'directory' and method == 'zstd':
        raise BackupError('compression zstd needs format custom (PostgreSQL 15 pg_dump '
                          'compresses directory format with gzip only); use gzip:N or none',
                          param='compression')
    p['compression'] = method if method == 'none' else '%s:%d' % (method, level)
    p['_method'], p['_level'] = method, level
    for name, default, low in (('jobs', DEFAULT_JOBS, 1), ('keep_days', DEFAULT_KEEP_DAYS, 0),
                               ('keep_min', DEFAULT_KEEP_MIN, 1)):
        value = p.get(name)
        value = default if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise BackupError('%s must be an integer >= %d; got %r' % (name, low, value),
                              param=name)
        p[name] = value
    p['lock_timeout'] = float(p.get('lock_timeout') if p.get('lock_timeout') is not None
                              else DEFAULT_LOCK_TIMEOUT)
    if p.get('metrics_dir') is None:
        p['metrics_dir'] = metrics.DEFAULT_TEXTFILE_DIR
    if (p.get('state') or 'present') == 'restored':
        _check_restore_target(p)
    return p


def _check_restore_target(p):
    target, param = p['target_database'], p['_target_param']
    if target in TEMPLATE_DATABASES:
        raise BackupError('refusing to restore into the template database %r: every later '
                          'CREATE DATABASE would copy the snapshot. Restore into another '
                          'database with target_database.' % target, param=param)
    if target == POSTGRES_DATABASE and not p.get('allow_postgres_database'):
        raise BackupError('refusing to restore into the maintenance database %r: tools and '
                          'monitoring connect to it. Set allow_postgres_database to replace it '
                          'anyway.' % target, param=param)
    if target == p['maintenance_db']:
        raise BackupError('target_database %r is the maintenance_db this restore connects '
                          'through; set maintenance_db to another database (e.g. template1)'
                          % target, param='maintenance_db')
