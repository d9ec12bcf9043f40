# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgBackRest: scheduled base backups and point-in-time recovery (PITR).

pgBackRest does the real work (WAL archiving, backups, restore). This module adds what an
operator at 3 a.m. needs around it: target-time parsing that refuses bad input before
anything is touched, the recovery window from ``pgbackrest info`` (a target outside it is
refused with the window in the message), one lock per stanza so cron runs never overlap,
metrics for every run, and the restore sequence itself (stop, delta restore, start, wait
for the end of recovery, report the point reached), in place or into a scratch cluster.
"""

from __future__ import annotations

import datetime
import json
import os
import pwd
import re
import shlex
import shutil
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable, locking, metrics, naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.process import STDERR_TAIL, run

BACKUP_TYPES = ('full', 'diff', 'incr')
TARGETS = ('time', 'latest', 'immediate')
RESTORE_TO = ('in_place', 'scratch')
DEFAULT_REPO_USER = 'pgbackrest'
DEFAULT_PG_USER = 'postgres'
DEFAULT_PG_BIN = '/usr/lib/postgresql/15/bin'
DEFAULT_PG_DATA = '/var/lib/postgresql/15/main'
DEFAULT_PG_SERVICE = 'postgresql@15-main'
DEFAULT_PG_LOG = '/var/log/postgresql/postgresql-15-main.log'
DEFAULT_SOCKET = '/var/run/postgresql'
DEFAULT_SCRATCH_ROOT = '/opt/codeb/pitr-scratch'
DEFAULT_SCRATCH_PORT = 5499
# How often archiving and promotion are polled: each poll is one short psql, and a restore
# waits for both, so a coarse interval adds straight to its time.
POLL_SECONDS = 0.1
DEFAULT_LOCK_DIR = '/run/lock'
SCRATCH_MARKER = '.codeb-pitr-scratch'

_TIME_RE = re.compile(
    r'\A(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d{1,6})?'
    r'\s*(Z|UTC|[+-]\d{2}(?::?\d{2})?)?\Z')
_STOP_RE = re.compile(r'recovery stopping (?:before|after) (?:commit|abort) of transaction \d+, '
                      r'time (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?[+-]\d{2}(?::?\d{2})?)')
_LAST_RE = re.compile(r'last completed transaction was at log time '
                      r'(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?[+-]\d{2}(?::?\d{2})?)')


# ---------------------------------------------------------------- parsing and validation

def parse_target_time(value, param='target_time'):
    """Parse ``YYYY-MM-DD HH:MM:SS[.ffffff][Z|+HH[:MM]]`` into an aware datetime.

    Without a zone the time is UTC (the collection's convention). Anything else is refused
    with a message naming ``param``.
    """
    if isinstance(value, datetime.datetime):
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    text = value.strip() if isinstance(value, str) else value
    match = _TIME_RE.match(text) if isinstance(text, str) else None
    if not match:
        raise BackupError(
            "%s must look like 'YYYY-MM-DD HH:MM:SS' (UTC; optional .ffffff fraction and a zone "
            "like +09:00); got %r" % (param, value), param=param)
    day, clock, fraction, zone = match.groups()
    try:
        moment = datetime.datetime.strptime('%s %s' % (day, clock), '%Y-%m-%d %H:%M:%S')
    except ValueError as exc:
        raise BackupError('%s %r is not a valid time: %s' % (param, value, exc), param=param)
    if fraction:
        moment = moment.replace(microsecond=int(fraction[1:].ljust(6, '0')))
    return moment.replace(tzinfo=_zone(zone))


def _zone(zone):
    if not zone or zone in ('Z', 'UTC'):
        return datetime.timezone.utc
    sign = -1 if zone[0] == '-' else 1
    digits = zone[1:].replace(':', '')
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    return datetime.timezone(sign * datetime.timedelta(hours=hours, minutes=minutes))


def format_time(moment):
    """The form pgBackRest and PostgreSQL take: ``YYYY-MM-DD HH:MM:SS[.ffffff]+00``."""
    moment = moment.astimezone(datetime.timezone.utc)
    text = moment.strftime('%Y-%m-%d %H:%M:%S')
    if moment.microsecond:
        text += '.%06d' % moment.microsecond
    return text + '+00'


def parse_pg_time(text):
    """Parse a PostgreSQL log/SQL timestamp like ``2026-11-27 15:02:03.123+00``."""
    return parse_target_time(text.strip(), param='time')


def validate_target(target, target_time):
    """Return ``(target, aware datetime or None)`` after checking the combination."""
    if target is None:
        target = 'time' if target_time else None
    if target not in TARGETS:
        raise BackupError('target must be one of %s; got %r' % (', '.join(TARGETS), target),
                          param='target')
    if target == 'time':
        if not target_time:
            raise BackupError("target=time needs target_time ('YYYY-MM-DD HH:MM:SS', UTC)",
                              param='target_time')
        return target, parse_target_time(target_time)
    if target_time:
        raise BackupError('target_time is only used with target=time; got target=%s' % target,
                          param='target_time')
    return target, None


def window_from_info(stanza_info):
    """``(earliest, newest_backup_stop)`` as aware datetimes from one stanza's info, or
    raise when the stanza has no backup to restore from."""
    backups = [b for b in stanza_info.get('backup', []) if not b.get('error')]
    if not backups:
        raise BackupError('stanza %r has no valid backup yet: take one first '
                          '(codeb-backup pgbackrest-backup --type full)' % stanza_info.get('name'),
                          param='stanza')
    stops = sorted(int(b['timestamp']['stop']) for b in backups)
    utc = datetime.timezone.utc
    return (datetime.datetime.fromtimestamp(stops[0], utc),
            datetime.datetime.fromtimestamp(stops[-1], utc))


def check_in_window(target_time, earliest, latest, param='target_time'):
    """Refuse a target outside ``[earliest, latest]`` with the window in the message."""
    if target_time < earliest or target_time > latest:
        raise BackupError(
            '%s %s is outside the recovery window: the earliest point is %s (end of the oldest '
            'backup) and the latest is %s (newest archived WAL). Pick a time in that window.'
            % (param, format_time(target_time), format_time(earliest), format_time(latest)),
            param=param, window=dict(earliest=format_time(earliest), latest=format_time(latest)))


# ---------------------------------------------------------------- running pgbackrest / psql

def check_setup(user, param, config=None):
    """Refuse, before anything is touched, on a host that was never set up for pgBackRest
    (``playbooks/setup-backup.yml`` installs pgbackrest, creates the repository's OS user
    and writes its configuration), with a message that says so and names ``param``."""
    never = ('this host was never set up for pgBackRest: run playbooks/setup-backup.yml '
             'for it first')
    if shutil.which('pgbackrest') is None:
        raise BackupError('pgbackrest is not installed, so %s.' % never, param=param)
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise BackupError('%s %r: no such OS user, so %s, or set %s to the OS user that owns '
                          'the pgBackRest repository or cluster here.'
                          % (param, user, never, param), param=param)
    if config and not os.path.exists(config):
        raise BackupError('config %s does not exist, so %s (or fix config).' % (config, never),
                          param='config')


def _as_user(user, argv):
    """Run ``argv`` as ``user``: directly if we are that user, through runuser if root."""
    if user is None:
        return argv
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise BackupError('OS user %r does not exist on this host' % user, param='run_as')
    if os.geteuid() == entry.pw_uid:
        return argv
    if os.geteuid() != 0:
        raise BackupError('must run as root or as %r to act as that user' % user, param='run_as')
    return ['runuser', '-u', user, '--'] + argv


def pgbackrest_argv(command, stanza=None, run_as=None, config=None, options=()):
    argv = ['pgbackrest']
    if config:
        argv.append('--config=%s' % config)
    if stanza:
        argv.append('--stanza=%s' % stanza)
    argv += list(options) + [command]
    return _as_user(run_as, argv)


def all_info(run_as=None, config=None):
    proc = run(pgbackrest_argv('info', run_as=run_as, config=config, options=['--output=json']),
               what='pgbackrest info')
    try:
        return json.loads(proc.stdout or '[]')
    except ValueError:
        raise BackupError('pgbackrest info did not return JSON: %s' % proc.stdout[:200])


def stanza_info(stanza, run_as=None, config=None):
    """Info for one stanza; an unknown stanza is refused listing the known ones."""
    naming.validate_name('stanza', stanza)
    stanzas = all_info(run_as=run_as, config=config)
    for entry in stanzas:
        if entry.get('name') == stanza:
            status = entry.get('status', {})
            if status.get('code') not in (0, 2):  # 2 = no valid backups (handled later)
                raise BackupError('stanza %r is not usable: %s' % (stanza, status.get('message')),
                                  param='stanza')
            return entry
    known = sorted(e.get('name') for e in stanzas if e.get('status', {}).get('code') in (0, 2))
    raise BackupError('unknown stanza %r; this repository has: %s'
                      % (stanza, ', '.join(known) or 'no stanza'), param='stanza', known=known)


def psql(sql, port=5432, socket=DEFAULT_SOCKET, run_as=DEFAULT_PG_USER,
         pg_bin=DEFAULT_PG_BIN, database='postgres', timeout=60, login_user='postgres'):
    argv = _as_user(run_as, [os.path.join(pg_bin, 'psql'), '-X', '-At', '-v', 'ON_ERROR_STOP=1',
                             '-h', socket, '-p', str(port), '-U', login_user, '-d', database,
                             '-c', sql])
    return run(argv, what='psql', timeout=timeout).stdout.strip()


def pg_is_running(port=5432, socket=DEFAULT_SOCKET, pg_bin=DEFAULT_PG_BIN):
    proc = run([os.path.join(pg_bin, 'pg_isready'), '-h', socket, '-p', str(port)], check=False)
    return proc.returncode == 0


def flush_archive(port=5432, socket=DEFAULT_SOCKET, run_as=DEFAULT_PG_USER,
                  pg_bin=DEFAULT_PG_BIN, timeout=120, login_user='postgres'):
    """Make everything committed so far reachable by PITR.

    Commits a marker transaction (so a time target before now always finds a commit after
    it to stop at), switches the WAL segment and waits until PostgreSQL reports it
    archived. Returns the marker's commit time: the end of the recovery window.
    """
    kwargs = dict(port=port, socket=socket, run_as=run_as, pg_bin=pg_bin, login_user=login_user)
    marker = psql('SELECT txid_current(); SELECT clock_timestamp()', **kwargs).splitlines()[-1]
    segment = psql('SELECT pg_walfile_name(pg_switch_wal())', **kwargs)
    deadline = time.monotonic() + timeout
    while True:
        row = psql("SELECT coalesce(last_archived_wal, ''), failed_count, "
                   "coalesce(last_failed_wal, '') FROM pg_stat_archiver", **kwargs)
        last, failed, last_failed = (row.split('|') + ['', '0', ''])[:3]
        # Segment names sort in WAL order within a timeline; a later timeline sorts later.
        if last and last[8:] >= segment[8:] and last[:8] >= segment[:8]:
            return parse_pg_time(marker), segment
        if time.monotonic() >= deadline:
            raise BackupError(
                'WAL segment %s was not archived within %s s (last archived %s, failed %s, last '
                'failed %s): check the backup host and `pgbackrest check`'
                % (segment, timeout, last or 'none', failed, last_failed or 'none'),
                param='timeout')
        time.sleep(POLL_SECONDS)


# ---------------------------------------------------------------- backups

def _lock_path(lock_dir, stanza):
    return os.path.join(lock_dir, 'codeb-backup-pgbackrest-%s.lock' % stanza)


def _newest_backup(info):
    backups = info.get('backup', [])
    return backups[-1] if backups else None


def backup(stanza, backup_type='incr', run_as=DEFAULT_REPO_USER, config=None, if_none=False,
           metrics_dir=metrics.DEFAULT_TEXTFILE_DIR, lock_dir=DEFAULT_LOCK_DIR, lock_timeout=1800,
           check_mode=False):
    """Take a pgBackRest backup of ``stanza`` and record its metrics.

    ``if_none``: only back up when the stanza has no backup yet (setup's first full).
    """
    naming.validate_name('stanza', stanza)
    if backup_type not in BACKUP_TYPES:
        raise BackupError('type must be one of %s; got %r' % (', '.join(BACKUP_TYPES), backup_type),
                          param='type')
    with Job('pgbackrest_%s' % backup_type, stanza, metrics_dir, check_mode,
             what='pgBackRest %s backup of stanza %s' % (backup_type, stanza)) as job, \
            locking.job_lock(_lock_path(lock_dir, stanza),
                             'pgBackRest backup of stanza %s' % stanza, wait=lock_timeout):
        info = stanza_info(stanza, run_as=run_as, config=config)
        if if_none and info.get('backup'):
            job.skip()
            newest = _newest_backup(info)
            return dict(changed=False, stanza=stanza, type=backup_type, label=newest.get('label'),
                        size_bytes=int(newest.get('info', {}).get('repository', {}).get('delta', 0)),
                        duration_seconds=job.duration(), msg='stanza already has a backup')
        if check_mode:
            return dict(changed=True, stanza=stanza, type=backup_type, label=None, size_bytes=0,
                        duration_seconds=0.0, msg='would take a %s backup' % backup_type)
        run(pgbackrest_argv('backup', stanza, run_as, config, ['--type=%s' % backup_type]),
            what='pgbackrest backup --type=%s' % backup_type)
        newest = _newest_backup(stanza_info(stanza, run_as=run_as, config=config))
        job.size = int(newest.get('info', {}).get('repository', {}).get('delta', 0))
        return dict(changed=True, stanza=stanza, type=newest.get('type', backup_type),
                    label=newest.get('label'), size_bytes=job.size,
                    database_size_bytes=int(newest.get('info', {}).get('size', 0)),
                    duration_seconds=job.duration())


# ---------------------------------------------------------------- restore (PITR)

def restore_options(target, target_time, delta=True):
    options = []
    if delta:
        options.append('--delta')
    if target == 'time':
        options += ['--type=time', '--target=%s' % format_time(target_time),
                    '--target-action=promote']
    elif target == 'immediate':
        options += ['--type=immediate', '--target-action=promote']
    return options


def recovered_point(log_text):
    """What the server logged about where recovery stopped: ``(stop_time, last_commit)``."""
    stop = _STOP_RE.findall(log_text)
    last = _LAST_RE.findall(log_text)
    return (stop[-1] if stop else None), (last[-1] if last else None)


def _wait_promoted(port, socket, run_as, pg_bin, timeout, alive=None, log=None,
                   login_user='postgres'):
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise BackupError('PostgreSQL stopped during recovery; the end of its log %s:\n%s'
                              % (log[0], _log_tail(log[0], log[1])[-STDERR_TAIL:]))
        try:
            kwargs = dict(port=port, socket=socket, run_as=run_as, pg_bin=pg_bin,
                          login_user=login_user)
            if psql('SELECT pg_is_in_recovery()', **kwargs) == 'f':
                return psql('SELECT timeline_id FROM pg_control_checkpoint()', **kwargs)
        except BackupError as exc:
            last_error = exc.msg
        time.sleep(POLL_SECONDS)
    raise BackupError('PostgreSQL did not finish recovery within %s s (last error: %s); see its '
                      'log' % (timeout, last_error), param='timeout')


def _log_tail(path, offset):
    try:
        with open(path, 'rb') as handle:
            handle.seek(offset)
            return handle.read().decode('utf-8', 'replace')
    except OSError:
        return ''


def _log_size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def plan_restore(stanza, target=None, target_time=None, restore_to='in_place',
                 pgbackrest_user=DEFAULT_PG_USER, config=None, archived_until=None, info=None):
    """Validate everything and return the plan; raises before anything is touched.
    ``info`` is the stanza's info when the caller already has it (saves a repository call)."""
    target, moment = validate_target(target, target_time)
    if restore_to not in RESTORE_TO:
        raise BackupError('restore_to must be one of %s; got %r' % (', '.join(RESTORE_TO), restore_to),
                          param='restore_to')
    if info is None:
        info = stanza_info(stanza, run_as=pgbackrest_user, config=config)
    earliest, newest_stop = window_from_info(dict(info, name=stanza))
    latest = archived_until or naming.utcnow()
    if moment is not None:
        check_in_window(moment, earliest, latest)
    return dict(stanza=stanza, target=target,
                target_time=format_time(moment) if moment else None,
                restore_to=restore_to,
                window=dict(earliest=format_time(earliest), latest=format_time(latest)),
                newest_backup_stop=format_time(newest_stop))


def restore(stanza, target=None, target_time=None, restore_to='in_place', check_mode=False,
            pg_data=DEFAULT_PG_DATA, pg_bin=DEFAULT_PG_BIN, pg_port=5432, pg_socket=DEFAULT_SOCKET,
            pg_service=DEFAULT_PG_SERVICE, pg_log=DEFAULT_PG_LOG, pg_user=DEFAULT_PG_USER,
            scratch_path=None, scratch_port=DEFAULT_SCRATCH_PORT, scratch_user=DEFAULT_REPO_USER,
            config=None, archived_until=None, timeout=600,
            metrics_dir=metrics.DEFAULT_TEXTFILE_DIR, lock_dir=DEFAULT_LOCK_DIR, lock_timeout=60,
            login_user='postgres'):
    """Point-in-time recovery with pgBackRest; returns a result dict.

    ``in_place`` (on the PostgreSQL host): archive up to now, stop the service, delta
    restore with the target and ``promote``, start, wait for the end of recovery.
    ``scratch`` (on the repository host): restore into ``scratch_path`` and start a
    separate cluster on ``scratch_port`` owned by ``scratch_user``; production is untouched.
    """
    started = time.monotonic()
    naming.validate_name('stanza', stanza)
    if archived_until is not None and not isinstance(archived_until, datetime.datetime):
        archived_until = parse_target_time(archived_until, param='archived_until')
    user = pg_user if restore_to == 'in_place' else scratch_user
    if restore_to in RESTORE_TO:
        check_setup(user, 'pg_user' if restore_to == 'in_place' else 'scratch_user', config)
    if restore_to == 'scratch':
        scratch_path = scratch_path or os.path.join(DEFAULT_SCRATCH_ROOT, stanza)
        _check_scratch_path(scratch_path)
    flushed = info = None
    if restore_to == 'in_place' and not check_mode and pg_is_running(pg_port, pg_socket, pg_bin):
        # validate first (cheap, read-only), then make the window reach "now"
        validate_target(target, target_time)  # a malformed time before any repository call
        info = stanza_info(stanza, run_as=user, config=config)
        plan_restore(stanza, target, target_time, restore_to, user, config, archived_until, info)
        flushed, _segment = flush_archive(pg_port, pg_socket, pg_user, pg_bin, timeout=timeout,
                                          login_user=login_user)
        archived_until = flushed
    plan = plan_restore(stanza, target, target_time, restore_to, user, config, archived_until, info)
    data_dir = pg_data if restore_to == 'in_place' else scratch_path
    result = dict(plan, changed=True, data_directory=data_dir,
                  port=pg_port if restore_to == 'in_place' else scratch_port)
    if check_mode:
        result.update(duration_seconds=round(time.monotonic() - started, 3), size_bytes=0)
        return result
    with Job('pitr_restore', '%s_%s' % (stanza, restore_to), metrics_dir,
             what='PITR of stanza %s (%s)' % (stanza, restore_to)) as job:
        with locking.job_lock(_lock_path(lock_dir, stanza) + '.restore',
                              'PITR of stanza %s' % stanza, wait=lock_timeout):
            if restore_to == 'in_place':
                log_offset = _log_size(pg_log)
                run(['systemctl', 'stop', pg_service], what='systemctl stop %s' % pg_service)
                run(pgbackrest_argv('restore', stanza, pg_user, config,
                                    restore_options(plan['target'], _plan_time(plan))),
                    what='pgbackrest restore', timeout=timeout)
                run(['systemctl', 'start', pg_service], what='systemctl start %s' % pg_service,
                    timeout=timeout)
                timeline = _wait_promoted(
                    pg_port, pg_socket, pg_user, pg_bin, timeout,
                    alive=lambda: run(['systemctl', 'is-active', '--quiet', pg_service],
                                      check=False).returncode == 0,
                    log=(pg_log, log_offset), login_user=login_user)
                log_text = _log_tail(pg_log, log_offset)
            else:
                log_path = os.path.join(scratch_path, 'startup.log')
                _restore_scratch(stanza, plan, scratch_path, scratch_port, scratch_user, pg_bin,
                                 config, timeout, log_path)
                timeline = _wait_promoted(
                    scratch_port, scratch_path, scratch_user, pg_bin, timeout,
                    alive=lambda: os.path.exists(os.path.join(scratch_path, 'postmaster.pid')),
                    log=(log_path, 0))
                log_text = _log_tail(log_path, 0)
        stop_time, last_commit = recovered_point(log_text)
        job.size = _dir_size(data_dir)
    result.update(timeline=int(timeline) if timeline.isdigit() else timeline,
                  recovery_stopped_at=stop_time, last_replayed_commit=last_commit,
                  archive_flushed_at=format_time(flushed) if flushed else None,
                  size_bytes=job.size, duration_seconds=round(time.monotonic() - started, 3))
    return result


def _plan_time(plan):
    return parse_target_time(plan['target_time']) if plan.get('target_time') else None


def _check_scratch_path(path):
    if not os.path.isabs(path) or os.path.normpath(path) != path or path == '/':
        raise BackupError('scratch_path must be an absolute, normalised path; got %r' % path,
                          param='scratch_path')
    if os.path.exists(path) and os.listdir(path) and \
            not os.path.exists(os.path.join(path, SCRATCH_MARKER)):
        raise BackupError('scratch_path %s exists and was not made by a scratch restore; refusing '
                          'to overwrite it' % path, param='scratch_path')


def _restore_scratch(stanza, plan, path, port, user, pg_bin, config, timeout, log_path):
    entry = pwd.getpwnam(user)
    if os.path.exists(os.path.join(path, 'postmaster.pid')):
        run(_as_user(user, [os.path.join(pg_bin, 'pg_ctl'), '-D', path, '-m', 'fast', '-w',
                            'stop']), what='pg_ctl stop (old scratch cluster)', check=False)
    if os.path.exists(path):
        shutil.rmtree(path)
    durable.ensure_dir(path, mode=0o700)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    options = ['--reset-pg1-host', '--pg1-path=%s' % path, '--archive-mode=off'] + \
        restore_options(plan['target'], _plan_time(plan), delta=False)
    run(pgbackrest_argv('restore', stanza, user, config, options), what='pgbackrest restore',
        timeout=timeout)
    # Debian keeps postgresql.conf/pg_hba.conf outside the data directory, so the restored
    # copy has none: give the scratch cluster its own, local-only and never archiving.
    conf = [
        "listen_addresses = ''",
        'port = %d' % int(port),
        "unix_socket_directories = '%s'" % path,
        'archive_mode = off',
        "shared_buffers = '64MB'",
        # no hot standby: PostgreSQL then does not insist on max_connections & co being at
        # least the primary's, and accepts connections only once recovery has finished.
        'hot_standby = off',
        "logging_collector = off",
    ]
    _write_owned(os.path.join(path, 'postgresql.conf'), '\n'.join(conf) + '\n', entry)
    _write_owned(os.path.join(path, 'pg_hba.conf'), 'local all all trust\n', entry)
    _write_owned(os.path.join(path, 'pg_ident.conf'), '', entry)
    _write_owned(os.path.join(path, SCRATCH_MARKER), 'scratch PITR of stanza %s\n' % stanza, entry)
    # -w: returns once the server accepts connections (still recovering), or fails fast.
    # The same settings on the command line too: they must beat whatever the production
    # cluster had set with ALTER SYSTEM (postgresql.auto.conf is restored with the data).
    options = "-h '' -p %d -k %s -c archive_mode=off -c hot_standby=off" % (int(port), shlex.quote(path))
    proc = run(_as_user(user, [os.path.join(pg_bin, 'pg_ctl'), '-D', path, '-l', log_path, '-w',
                               '-t', str(int(timeout)), '-o', options, 'start']),
               check=False, timeout=timeout + 30)
    if proc.returncode != 0:
        raise BackupError('the scratch cluster did not start; the end of its log %s:\n%s'
                          % (log_path, _log_tail(log_path, 0)[-STDERR_TAIL:]))


def _write_owned(path, text, entry):
    with open(path, 'w') as handle:
        handle.write(text)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    os.chmod(path, 0o600)


def _dir_size(path):
    total = 0
    for base, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except OSError:
                pass
    return total


# ---------------------------------------------------------------- host CLI

def register_cli(subparsers):
    parser = subparsers.add_parser(
        'pgbackrest-backup', help='take a pgBackRest backup (full/diff/incr) and write metrics')
    parser.add_argument('--stanza', required=True)
    parser.add_argument('--type', dest='backup_type', choices=BACKUP_TYPES, default='incr')
    parser.add_argument('--run-as', default=DEFAULT_REPO_USER,
                        help='OS user that owns the repository (default %(default)s)')
    parser.add_argument('--config', default=None, help='pgbackrest.conf to use')
    parser.add_argument('--if-none', action='store_true',
                        help='only back up when the stanza has no backup yet')
    parser.add_argument('--metrics-dir', default=metrics.DEFAULT_TEXTFILE_DIR)
    parser.add_argument('--lock-timeout', type=float, default=1800.0)
    parser.set_defaults(handler=_cli_backup)

    parser = subparsers.add_parser(
        'pgbackrest-window', help='show the point-in-time recovery window of a stanza')
    parser.add_argument('--stanza', required=True)
    parser.add_argument('--run-as', default=DEFAULT_REPO_USER)
    parser.add_argument('--config', default=None)
    parser.set_defaults(handler=_cli_window)


def _cli_backup(args):
    return backup(args.stanza, args.backup_type, run_as=args.run_as, config=args.config,
                  if_none=args.if_none, metrics_dir=args.metrics_dir,
                  lock_timeout=args.lock_timeout)


def _cli_window(args):
    check_setup(args.run_as, 'run_as', args.config)
    info = stanza_info(args.stanza, run_as=args.run_as, config=args.config)
    earliest, newest = window_from_info(dict(info, name=args.stanza))
    return dict(stanza=args.stanza, earliest=format_time(earliest),
                newest_backup_stop=format_time(newest), latest='now (archived WAL)',
                backups=[dict(label=b.get('label'), type=b.get('type'),
                              stop=format_time(datetime.datetime.fromtimestamp(
                                  int(b['timestamp']['stop']), datetime.timezone.utc)))
                         for b in info.get('backup', [])])
