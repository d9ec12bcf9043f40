# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgBackRest: the stanza, scheduled base backups, and what ``pgbackrest info`` tells.

pgBackRest does the real work (WAL archiving, backups, restore). This module adds what an
operator at 3 a.m. needs around it: a stanza created only when it is missing and checked
end to end, one lock per stanza so cron runs never overlap, metrics for every backup, the
recovery window from ``pgbackrest info``, and the choice of the backup a streaming standby
is seeded from. Point-in-time recovery itself is in ``pitr``.

The options of the ``pg_pitr`` and ``pg_pitr_info`` modules and of the ``pgbackrest-*``
host commands are defined once, in :data:`OPTIONS`; each picks its subset by name.
"""

from __future__ import annotations

import datetime
import json
import os
import pwd
import shutil

from ansible_collections.codeb.backup.plugins.module_utils import locking, metrics, naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.postgres.connection import as_os_user
from ansible_collections.codeb.backup.plugins.module_utils.process import run
from ansible_collections.codeb.backup.plugins.module_utils.spec import (
    Option, add_arguments, params_from_args)

STATES = ('restored', 'archived', 'stanza', 'backup')
BACKUP_TYPES = ('full', 'diff', 'incr')
TARGETS = ('time', 'latest', 'immediate')
RESTORE_TO = ('in_place', 'scratch')
DEFAULT_REPO_USER = 'pgbackrest'
DEFAULT_OS_USER = 'postgres'
DEFAULT_PG_BIN_DIR = '/usr/lib/postgresql/15/bin'
DEFAULT_PG_DATA = '/var/lib/postgresql/15/main'
DEFAULT_PG_SERVICE = 'postgresql@15-main'
DEFAULT_PG_LOG = '/var/log/postgresql/postgresql-15-main.log'
DEFAULT_SOCKET = '/var/run/postgresql'
DEFAULT_SCRATCH_PORT = 5499
DEFAULT_LOCK_DIR = '/run/lock'
# A second backup of a stanza waits this long for the running one (a full backup of a
# large cluster takes a while); a second recovery fails sooner, an operator is waiting.
BACKUP_LOCK_TIMEOUT = 1800.0
RESTORE_LOCK_TIMEOUT = 60.0
# ``pgbackrest info`` status codes of a stanza that stanza-create makes: 1 missing stanza
# path, 3 missing stanza data. 0 is ok and 2 is "no valid backup" (usable, empty).
ABSENT_CODES = (1, 3)
_USABLE_CODES = (0, 2)

OPTIONS = (
    Option('state', default='restored', choices=STATES, cli=False),
    Option('stanza', default='codeb', help='pgBackRest stanza'),
    Option('target', choices=TARGETS, cli=False),
    Option('target_time', cli=False),
    Option('restore_to', default='in_place', choices=RESTORE_TO, cli=False),
    Option('archived_until', cli=False),
    Option('backup_type', default='incr', choices=BACKUP_TYPES, flag_aliases=('type',),
           help='kind of backup'),
    Option('if_none', type='bool', default=False,
           help='only back up when the stanza has no backup yet'),
    Option('timeline', type='int', cli=False),
    Option('timeline_history', default='', cli=False),
    Option('pg_data', type='path', default=DEFAULT_PG_DATA, cli=False),
    Option('pg_bin_dir', type='path', default=DEFAULT_PG_BIN_DIR, aliases=('pg_bin',), cli=False),
    Option('pg_service', default=DEFAULT_PG_SERVICE, cli=False),
    Option('pg_log', type='path', default=DEFAULT_PG_LOG, cli=False),
    Option('os_user', default=DEFAULT_OS_USER, aliases=('pg_user',), cli=False),
    Option('login_user', default='postgres', cli=False),
    Option('login_port', type='int', default=5432, cli=False),
    Option('login_unix_socket', type='path', default=DEFAULT_SOCKET, cli=False),
    Option('scratch_path', type='path', cli=False),
    Option('scratch_port', type='int', default=DEFAULT_SCRATCH_PORT, cli=False),
    Option('repo_user', default=DEFAULT_REPO_USER, aliases=('scratch_user',),
           flag_aliases=('run-as',), help='OS user that owns the pgBackRest repository'),
    Option('config', type='path', help='pgbackrest.conf to use'),
    Option('timeout', type='int', default=600, cli=False),
    locking.lock_timeout_option(None, 'the same stanza'),
    metrics.METRICS_DIR_OPTION,
)


# What ``pg_pitr_info`` reads with; ``pg_pitr`` takes every other option but these two.
INFO_OPTIONS = ('stanza', 'repo_user', 'config', 'timeline', 'timeline_history')
PITR_OPTIONS = tuple(opt.name for opt in OPTIONS if opt.name not in ('timeline', 'timeline_history'))


def option(name):
    """The one :class:`Option` called ``name``."""
    return next(opt for opt in OPTIONS if opt.name == name)


def options(names):
    """The :class:`Option` objects called ``names``, in that order."""
    return tuple(option(name) for name in names)


# ---------------------------------------------------------------- times and the window

def format_time(moment):
    """The form pgBackRest and PostgreSQL take: ``YYYY-MM-DD HH:MM:SS[.ffffff]+00``."""
    moment = moment.astimezone(datetime.timezone.utc)
    text = moment.strftime('%Y-%m-%d %H:%M:%S')
    if moment.microsecond:
        text += '.%06d' % moment.microsecond
    return text + '+00'


def _stop_time(backup_entry):
    return datetime.datetime.fromtimestamp(int(backup_entry['timestamp']['stop']),
                                           datetime.timezone.utc)


def window_from_info(stanza_info):
    """``(earliest, newest_backup_stop)`` as aware datetimes from one stanza's info, or
    raise when the stanza has no backup to restore from."""
    backups = [b for b in stanza_info.get('backup', []) if not b.get('error')]
    if not backups:
        raise BackupError('stanza %r has no valid backup yet: take one first '
                          '(codeb-backup pgbackrest-backup --type full)' % stanza_info.get('name'),
                          param='stanza')
    stops = sorted(_stop_time(b) for b in backups)
    return stops[0], stops[-1]


# ---------------------------------------------------------------- the standby's seed backup

def parse_lsn(text):
    """``'0/3000028'`` (PostgreSQL's LSN notation) as an integer."""
    high, low = text.split('/')
    return (int(high, 16) << 32) | int(low, 16)


def timeline_forks(history):
    """``{timeline: LSN where the history left it}`` from a timeline history file's text.

    Each line is ``parent_tli  switch_lsn  reason``; blank and comment lines are skipped.
    """
    forks = {}
    for line in (history or '').splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit():
            forks[int(fields[0])] = parse_lsn(fields[1])
    return forks


def seed_backup(stanza_info, timeline, history=''):
    """The label of the newest backup a standby of a primary on ``timeline`` (whose
    history file reads ``history``) can start from, or None.

    Usable: a backup of ``timeline`` itself, or one of an ancestor timeline that ended
    (stop LSN) at or before the point where the primary's history left that timeline. A
    backup on a dead branch (after an in-place PITR to a time before it) cannot reach
    the primary's timeline, and a backup pgBackRest flagged with an error is not trusted.
    """
    forks = timeline_forks(history)
    chosen = None
    for entry in stanza_info.get('backup', []):  # pgBackRest lists the oldest first
        start = (entry.get('archive') or {}).get('start')
        stop_lsn = (entry.get('lsn') or {}).get('stop')
        if entry.get('error') or not start or not stop_lsn:
            continue
        backup_timeline = int(start[:8], 16)
        if backup_timeline == int(timeline) or \
                (backup_timeline in forks and parse_lsn(stop_lsn) <= forks[backup_timeline]):
            chosen = entry.get('label')
    return chosen


def describe(stanza_info, timeline=None, history=''):
    """What ``pg_pitr_info`` returns for one stanza: its backups, the window, the
    standby's seed backup."""
    backups = [dict(label=b.get('label'), type=b.get('type'), error=bool(b.get('error')),
                    timeline=int(b['archive']['start'][:8], 16) if b.get('archive') else None,
                    stop=format_time(_stop_time(b)),
                    size_bytes=int((b.get('info') or {}).get('size', 0)),
                    repository_size_bytes=int(((b.get('info') or {}).get('repository') or {})
                                              .get('delta', 0)))
               for b in stanza_info.get('backup', [])]
    result = dict(stanza=stanza_info.get('name'), backups=backups,
                  status=(stanza_info.get('status') or {}).get('message'),
                  earliest=None, newest_backup_stop=None)
    if any(not b['error'] for b in backups):
        earliest, newest = window_from_info(stanza_info)
        result.update(earliest=format_time(earliest), newest_backup_stop=format_time(newest))
    if timeline is not None:
        result['seed_backup'] = seed_backup(stanza_info, timeline, history)
    return result


# ---------------------------------------------------------------- running pgbackrest

def setup_problem(user, param, config=None):
    """Why this host cannot run pgBackRest as ``user`` (a BackupError naming ``param``:
    it was never set up by ``playbooks/setup-backup.yml``), or None."""
    never = ('this host was never set up for pgBackRest: run playbooks/setup-backup.yml '
             'for it first')
    if shutil.which('pgbackrest') is None:
        return BackupError('pgbackrest is not installed, so %s.' % never, param=param)
    try:
        pwd.getpwnam(user)
    except KeyError:
        return BackupError('%s %r: no such OS user, so %s, or set %s to the OS user that owns '
                           'the pgBackRest repository or cluster here.'
                           % (param, user, never, param), param=param)
    if config and not os.path.exists(config):
        return BackupError('config %s does not exist, so %s (or fix config).' % (config, never),
                           param='config')
    return None


def check_setup(user, param, config=None):
    """Refuse, before anything is touched, on a host that was never set up for pgBackRest,
    with a message that says so and names ``param``."""
    problem = setup_problem(user, param, config)
    if problem is not None:
        raise problem


def run_as(user, argv, param='repo_user', **run_kwargs):
    """``process.run(argv)`` as OS user ``user`` (the value of option ``param``), switched
    the one way every PostgreSQL tool of the collection is (``connection.as_os_user``)."""
    popen_kwargs, env = as_os_user(user, param)
    return run(argv, env=env, **dict(run_kwargs, **popen_kwargs))


def pgbackrest(command, stanza=None, user=None, config=None, options=(), param='repo_user',
               **run_kwargs):
    """Run ``pgbackrest [--config] [--stanza] options command`` as ``user``."""
    argv = ['pgbackrest']
    if config:
        argv.append('--config=%s' % config)
    if stanza:
        argv.append('--stanza=%s' % stanza)
    run_kwargs.setdefault('what', 'pgbackrest %s' % command)
    return run_as(user, argv + list(options) + [command], param, **run_kwargs)


def all_info(run_as=None, config=None):
    proc = pgbackrest('info', user=run_as, config=config, options=['--output=json'])
    try:
        return json.loads(proc.stdout or '[]')
    except ValueError:
        raise BackupError('pgbackrest info did not return JSON: %s' % proc.stdout[:200])


def _status_code(entry):
    return (entry.get('status') or {}).get('code')


def stanza_info(stanza, run_as=None, config=None):
    """Info for one stanza; an unknown stanza is refused listing the known ones."""
    naming.validate_name('stanza', stanza)
    stanzas = all_info(run_as=run_as, config=config)
    for entry in stanzas:
        if entry.get('name') == stanza:
            if _status_code(entry) not in _USABLE_CODES:
                raise BackupError('stanza %r is not usable: %s'
                                  % (stanza, (entry.get('status') or {}).get('message')),
                                  param='stanza')
            return entry
    known = sorted(e.get('name') for e in stanzas if _status_code(e) in _USABLE_CODES)
    raise BackupError('unknown stanza %r; this repository has: %s'
                      % (stanza, ', '.join(known) or 'no stanza'), param='stanza', known=known)


def _stanza_entry(stanza, repo_user, config):
    """The stanza's info, or None when this host or its repository does not have it yet."""
    if setup_problem(repo_user, 'repo_user', config) is not None:
        return None
    for entry in all_info(run_as=repo_user, config=config):
        if entry.get('name') == stanza and _status_code(entry) not in ABSENT_CODES:
            return entry
    return None


def ensure_stanza(stanza, repo_user=DEFAULT_REPO_USER, config=None, check_mode=False):
    """Create ``stanza`` if the repository does not have it, then ``pgbackrest check``
    (archiving and backups work end to end). ``changed`` only when it was created.

    Check mode creates and checks nothing: ``check`` switches the WAL segment on the
    primary and archives it, which is a write.
    """
    naming.validate_name('stanza', stanza)
    problem = setup_problem(repo_user, 'repo_user', config)
    if problem is not None:
        if not check_mode:
            raise problem
        # a first run in check mode: setup has not installed anything yet
        return dict(changed=True, stanza=stanza, created=True, checked=False,
                    msg='would create stanza %s and check it (pgBackRest is not set up on this '
                        'host yet)' % stanza)
    absent = _stanza_entry(stanza, repo_user, config) is None
    if check_mode:
        return dict(changed=absent, stanza=stanza, created=absent, checked=False,
                    msg=('would create stanza %s and check it' if absent else
                         'stanza %s exists; would check it') % stanza)
    if absent:
        pgbackrest('stanza-create', stanza, repo_user, config)
    pgbackrest('check', stanza, repo_user, config)
    return dict(changed=absent, stanza=stanza, created=absent, checked=True,
                msg=('created stanza %s; check passed' if absent else
                     'stanza %s exists; check passed') % stanza)


# ---------------------------------------------------------------- backups

def lock_path(lock_dir, stanza):
    return os.path.join(lock_dir, 'codeb-backup-pgbackrest-%s.lock' % stanza)


def _newest_backup(info):
    backups = info.get('backup', [])
    return backups[-1] if backups else None


def backup(stanza, backup_type='incr', repo_user=DEFAULT_REPO_USER, config=None, if_none=False,
           metrics_dir=metrics.DEFAULT_TEXTFILE_DIR, lock_dir=DEFAULT_LOCK_DIR,
           lock_timeout=BACKUP_LOCK_TIMEOUT, check_mode=False):
    """Take a pgBackRest backup of ``stanza`` and record its metrics.

    ``if_none``: only back up when the stanza has no backup yet (setup's first full).
    """
    naming.validate_name('stanza', stanza)
    if backup_type not in BACKUP_TYPES:
        raise BackupError('backup_type must be one of %s; got %r'
                          % (', '.join(BACKUP_TYPES), backup_type), param='backup_type')
    if check_mode and _stanza_entry(stanza, repo_user, config) is None:
        # a first run in check mode: the stanza is only predicted
        return dict(changed=True, stanza=stanza, type=backup_type, label=None, size_bytes=0,
                    duration_seconds=0.0, msg='would take a %s backup' % backup_type)
    with Job('pgbackrest_%s' % backup_type, stanza, metrics_dir, check_mode,
             what='pgBackRest %s backup of stanza %s' % (backup_type, stanza)) as job, \
            locking.job_lock(lock_path(lock_dir, stanza),
                             'pgBackRest backup of stanza %s' % stanza, wait=lock_timeout):
        info = stanza_info(stanza, run_as=repo_user, config=config)
        if if_none and info.get('backup'):
            job.skip()
            newest = _newest_backup(info)
            return dict(changed=False, stanza=stanza, type=backup_type, label=newest.get('label'),
                        size_bytes=int(newest.get('info', {}).get('repository', {}).get('delta', 0)),
                        duration_seconds=job.duration(), msg='stanza already has a backup')
        if check_mode:
            return dict(changed=True, stanza=stanza, type=backup_type, label=None, size_bytes=0,
                        duration_seconds=0.0, msg='would take a %s backup' % backup_type)
        pgbackrest('backup', stanza, repo_user, config, ['--type=%s' % backup_type],
                   what='pgbackrest backup --type=%s' % backup_type)
        newest = _newest_backup(stanza_info(stanza, run_as=repo_user, config=config))
        job.size = int(newest.get('info', {}).get('repository', {}).get('delta', 0))
        return dict(changed=True, stanza=stanza, type=newest.get('type', backup_type),
                    label=newest.get('label'), size_bytes=job.size,
                    database_size_bytes=int(newest.get('info', {}).get('size', 0)),
                    duration_seconds=job.duration())


def info(stanza, repo_user=DEFAULT_REPO_USER, config=None, timeline=None, timeline_history=''):
    """``pg_pitr_info`` and ``codeb-backup pgbackrest-window``: read-only, never changed."""
    check_setup(repo_user, 'repo_user', config)
    entry = stanza_info(stanza, run_as=repo_user, config=config)
    return dict(describe(dict(entry, name=stanza), timeline, timeline_history), changed=False)


# ---------------------------------------------------------------- host CLI

_BACKUP_FLAGS = ('stanza', 'backup_type', 'repo_user', 'config', 'if_none', 'metrics_dir',
                 'lock_timeout')
_WINDOW_FLAGS = ('stanza', 'repo_user', 'config')


def _cli_options(names):
    # cron names the stanza on every line: required there, unlike the module's default
    return tuple(option(name).replace(required=True, default=None) if name == 'stanza'
                 else option(name) for name in names)


def register_cli(subparsers):
    parser = subparsers.add_parser(
        'pgbackrest-backup', help='take a pgBackRest backup (full/diff/incr) and write metrics')
    add_arguments(parser, _cli_options(_BACKUP_FLAGS))
    parser.set_defaults(handler=_cli_backup)

    parser = subparsers.add_parser(
        'pgbackrest-window', help='show the point-in-time recovery window of a stanza')
    add_arguments(parser, _cli_options(_WINDOW_FLAGS))
    parser.set_defaults(handler=_cli_window)


def _cli_backup(args):
    p = params_from_args(args, _cli_options(_BACKUP_FLAGS))
    return backup(p['stanza'], p['backup_type'], repo_user=p['repo_user'], config=p['config'],
                  if_none=p['if_none'], metrics_dir=p['metrics_dir'] or None,
                  lock_timeout=BACKUP_LOCK_TIMEOUT if p['lock_timeout'] is None
                  else p['lock_timeout'])


def _cli_window(args):
    p = params_from_args(args, _cli_options(_WINDOW_FLAGS))
    result = info(p['stanza'], repo_user=p['repo_user'], config=p['config'])
    if result['earliest'] is None:  # a window command without a window is an error
        window_from_info(dict(backup=[], name=p['stanza']))
    result.pop('changed')
    result['latest'] = 'now (archived WAL)'
    return result
