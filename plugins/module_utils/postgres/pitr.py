# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Point-in-time recovery (PITR) with pgBackRest.

Target-time parsing that refuses bad input before anything is touched, the recovery
window check (a target outside it is refused with the window in the message), and the
restore sequence itself (stop, delta restore, start, wait for the end of recovery,
report the point reached), in place or into a scratch cluster. The stanza, backups and
``pgbackrest info`` are in ``pgbackrest``.
"""

from __future__ import annotations

import datetime
import os
import pwd
import re
import shlex
import shutil
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable, locking, metrics, naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.postgres.connection import Connection
from ansible_collections.codeb.backup.plugins.module_utils.postgres.pgbackrest import (
    DEFAULT_LOCK_DIR, DEFAULT_OS_USER, DEFAULT_PG_BIN_DIR, DEFAULT_PG_DATA, DEFAULT_PG_LOG,
    DEFAULT_PG_SERVICE, DEFAULT_REPO_USER, DEFAULT_SCRATCH_PORT, DEFAULT_SOCKET,
    RESTORE_LOCK_TIMEOUT, RESTORE_TO, TARGETS, check_setup, format_time, lock_path,
    pgbackrest, run_as, stanza_info, window_from_info)
from ansible_collections.codeb.backup.plugins.module_utils.process import STDERR_TAIL, run

DEFAULT_SCRATCH_ROOT = '/opt/codeb/pitr-scratch'
# How often archiving and promotion are polled: each poll is one short psql, and a restore
# waits for both, so a coarse interval adds straight to its time.
POLL_SECONDS = 0.1
SCRATCH_MARKER = '.codeb-pitr-scratch'

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
    match = naming.TARGET_TIME_RE.match(text) if isinstance(text, str) else None
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


def check_in_window(target_time, earliest, latest, param='target_time'):
    """Refuse a target outside ``[earliest, latest]`` with the window in the message."""
    if target_time < earliest or target_time > latest:
        raise BackupError(
            '%s %s is outside the recovery window: the earliest point is %s (end of the oldest '
            'backup) and the latest is %s (newest archived WAL). Pick a time in that window.'
            % (param, format_time(target_time), format_time(earliest), format_time(latest)),
            param=param, window=dict(earliest=format_time(earliest), latest=format_time(latest)))


# ---------------------------------------------------------------- the running cluster

def _connection(port, socket, run_as, pg_bin, login_user):
    return Connection(dict(login_port=port, login_unix_socket=socket, os_user=run_as,
                           pg_bin_dir=pg_bin, login_user=login_user))


def psql(sql, port=5432, socket=DEFAULT_SOCKET, run_as=DEFAULT_OS_USER,
         pg_bin=DEFAULT_PG_BIN_DIR, database='postgres', timeout=60, login_user='postgres',
         connection=None):
    """``connection`` (a ``Connection``, e.g. to a remote primary with a password) replaces
    the local socket settings."""
    conn = connection or _connection(port, socket, run_as, pg_bin, login_user)
    return conn.psql(sql, database, timeout=timeout).strip()


def pg_is_running(port=5432, socket=DEFAULT_SOCKET, pg_bin=DEFAULT_PG_BIN_DIR):
    conn = _connection(port, socket, None, pg_bin, 'postgres')
    return conn.run([conn.tool('pg_isready')], 'pg_isready', check=False).returncode == 0


def flush_archive(port=5432, socket=DEFAULT_SOCKET, run_as=DEFAULT_OS_USER,
                  pg_bin=DEFAULT_PG_BIN_DIR, timeout=120, login_user='postgres', connection=None):
    """Make everything committed so far reachable by PITR.

    Commits a marker transaction (so a time target before now always finds a commit after
    it to stop at), switches the WAL segment and waits until PostgreSQL reports it
    archived. Returns the marker's commit time: the end of the recovery window.
    """
    kwargs = dict(port=port, socket=socket, run_as=run_as, pg_bin=pg_bin, login_user=login_user,
                  connection=connection)
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
                 pgbackrest_user=DEFAULT_OS_USER, config=None, archived_until=None, info=None):
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
            pg_data=DEFAULT_PG_DATA, pg_bin_dir=DEFAULT_PG_BIN_DIR, login_port=5432,
            login_unix_socket=DEFAULT_SOCKET, pg_service=DEFAULT_PG_SERVICE,
            pg_log=DEFAULT_PG_LOG, os_user=DEFAULT_OS_USER, scratch_path=None,
            scratch_port=DEFAULT_SCRATCH_PORT, repo_user=DEFAULT_REPO_USER, config=None,
            archived_until=None, timeout=600, metrics_dir=metrics.DEFAULT_TEXTFILE_DIR,
            lock_dir=DEFAULT_LOCK_DIR, lock_timeout=RESTORE_LOCK_TIMEOUT, login_user='postgres'):
    """Point-in-time recovery with pgBackRest; returns a result dict.

    ``in_place`` (on the PostgreSQL host): archive up to now, stop the service, delta
    restore with the target and ``promote``, start, wait for the end of recovery.
    ``scratch`` (on the repository host): restore into ``scratch_path`` and start a
    separate cluster on ``scratch_port`` owned by ``repo_user`` (it reads the repository);
    production is untouched.
    """
    started = time.monotonic()
    naming.validate_name('stanza', stanza)
    if archived_until is not None and not isinstance(archived_until, datetime.datetime):
        archived_until = parse_target_time(archived_until, param='archived_until')
    user = os_user if restore_to == 'in_place' else repo_user
    if restore_to in RESTORE_TO:
        check_setup(user, _user_param(restore_to), config)
    if restore_to == 'scratch':
        scratch_path = scratch_path or os.path.join(DEFAULT_SCRATCH_ROOT, stanza)
        _check_scratch_path(scratch_path)
    flushed = info = None
    if restore_to == 'in_place' and not check_mode and \
            pg_is_running(login_port, login_unix_socket, pg_bin_dir):
        # validate first (cheap, read-only), then make the window reach "now"
        validate_target(target, target_time)  # a malformed time before any repository call
        info = stanza_info(stanza, run_as=user, config=config)
        plan_restore(stanza, target, target_time, restore_to, user, config, archived_until, info)
        flushed, _segment = flush_archive(login_port, login_unix_socket, os_user, pg_bin_dir,
                                          timeout=timeout, login_user=login_user)
        archived_until = flushed
    plan = plan_restore(stanza, target, target_time, restore_to, user, config, archived_until, info)
    data_dir = pg_data if restore_to == 'in_place' else scratch_path
    result = dict(plan, changed=True, data_directory=data_dir,
                  port=login_port if restore_to == 'in_place' else scratch_port)
    if check_mode:
        result.update(duration_seconds=round(time.monotonic() - started, 3), size_bytes=0)
        return result
    with Job('pitr_restore', '%s_%s' % (stanza, restore_to), metrics_dir,
             what='PITR of stanza %s (%s)' % (stanza, restore_to)) as job:
        with locking.job_lock(lock_path(lock_dir, stanza) + '.restore',
                              'PITR of stanza %s' % stanza, wait=lock_timeout):
            if restore_to == 'in_place':
                log_offset = _log_size(pg_log)
                run(['systemctl', 'stop', pg_service], what='systemctl stop %s' % pg_service)
                pgbackrest('restore', stanza, os_user, config,
                           restore_options(plan['target'], _plan_time(plan)), param='os_user',
                           timeout=timeout)
                run(['systemctl', 'start', pg_service], what='systemctl start %s' % pg_service,
                    timeout=timeout)
                timeline = _wait_promoted(
                    login_port, login_unix_socket, os_user, pg_bin_dir, timeout,
                    alive=lambda: run(['systemctl', 'is-active', '--quiet', pg_service],
                                      check=False).returncode == 0,
                    log=(pg_log, log_offset), login_user=login_user)
                log_text = _log_tail(pg_log, log_offset)
            else:
                log_path = os.path.join(scratch_path, 'startup.log')
                _restore_scratch(stanza, plan, scratch_path, scratch_port, repo_user, pg_bin_dir,
                                 config, timeout, log_path)
                timeline = _wait_promoted(
                    scratch_port, scratch_path, repo_user, pg_bin_dir, timeout,
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


def _user_param(restore_to):
    """The option naming the OS user a restore runs as: the cluster's owner in place, the
    repository's owner for a scratch copy."""
    return 'os_user' if restore_to == 'in_place' else 'repo_user'


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
        run_as(user, [os.path.join(pg_bin, 'pg_ctl'), '-D', path, '-m', 'fast', '-w', 'stop'],
               what='pg_ctl stop (old scratch cluster)', check=False)
    if os.path.exists(path):
        shutil.rmtree(path)
    durable.ensure_dir(path, mode=0o700)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    options = ['--reset-pg1-host', '--pg1-path=%s' % path, '--archive-mode=off'] + \
        restore_options(plan['target'], _plan_time(plan), delta=False)
    pgbackrest('restore', stanza, user, config, options, timeout=timeout)
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
    proc = run_as(user, [os.path.join(pg_bin, 'pg_ctl'), '-D', path, '-l', log_path, '-w',
                         '-t', str(int(timeout)), '-o', options, 'start'],
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
