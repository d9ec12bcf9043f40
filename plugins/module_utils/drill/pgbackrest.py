# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pgBackRest + PITR drill: marker rows are written on the primary (one, then the
recovery target time, then one after it) and archived; the latest backup is restored into
a scratch data directory with that target and ``--archive-mode=off`` (the point-in-time
recovery's own scratch restore, ``pitr.restore``), the first marker must be there and the
later one must not, ``pg_amcheck`` checks the scratch cluster and ``pgbackrest verify`` the
repository; the cluster is stopped and removed. The recovered point's age is the drill's
RPO, its wall time the RTO."""

from __future__ import annotations

import contextlib
import os
import re
import time

from ansible_collections.codeb.backup.plugins.module_utils import naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.postgres import pgbackrest as pb
from ansible_collections.codeb.backup.plugins.module_utils.postgres import pitr
from ansible_collections.codeb.backup.plugins.module_utils.postgres.connection import Connection, as_os_user
from ansible_collections.codeb.backup.plugins.module_utils.process import STDERR_TAIL
from ansible_collections.codeb.backup.plugins.module_utils.drill.scratch import check_free_space

# The restored cluster listens on no TCP address (pitr's scratch configuration), only on a
# socket in its own data directory: no port of the host can clash with it.
SCRATCH_PORT = 5432
# The bootstrap superuser of a Debian cluster, and so of the restored copy.
SCRATCH_SUPERUSER = 'postgres'
MARKER_TABLE = 'codeb_drill.marker'
_MARKER_SQL = (
    'CREATE SCHEMA IF NOT EXISTS codeb_drill; '
    'CREATE TABLE IF NOT EXISTS codeb_drill.marker (id bigserial PRIMARY KEY, '
    "note text NOT NULL, written_at timestamptz NOT NULL DEFAULT clock_timestamp())")


def targets(p):
    return [p['pgbackrest_stanza']]


def label(target):
    return target


def environment(_p, _scratch):
    return contextlib.nullcontext()


def _insert(primary, db, note):
    out = primary.psql('INSERT INTO %s (note) VALUES (%s) RETURNING id'
                       % (MARKER_TABLE, "'%s'" % note), db, what='writing a drill marker row')
    return int(out.strip().splitlines()[0])


def write_markers(primary, db, timeout):
    """Commit a marker row, take the target time, commit a row after it, and wait until the
    WAL holding both is archived; return ``(marker id, after id, target, archived until)``."""
    primary.psql(_MARKER_SQL, db, what='creating the drill marker table')
    marker = _insert(primary, db, 'restore drill marker')
    target = pitr.parse_pg_time(primary.psql('SELECT clock_timestamp()', db,
                                             what='reading the target time'))
    after = _insert(primary, db, 'committed after the recovery target: must not be restored')
    flushed, _segment = pitr.flush_archive(timeout=timeout, connection=primary)
    return marker, after, target, flushed


def drill(p, scratch, _env, stanza, job):
    repo_user, config = p['pgbackrest_repo_user'], p['pgbackrest_config']
    db = p['pgbackrest_marker_db']
    primary = Connection(p['primary_connection'])
    pb.check_setup(repo_user, 'pgbackrest_repo_user', config)
    info = pb.stanza_info(stanza, run_as=repo_user, config=config)
    backups = info.get('backup') or []
    if not backups:
        raise BackupError('stanza %s has no backup to drill' % stanza, param='pgbackrest_stanza')
    newest = backups[-1]
    artifact = 'backup %s of stanza %s' % (newest.get('label'), stanza)
    check_free_space(scratch.base, (newest.get('info') or {}).get('size') or 0,
                     p['scratch_reserve_mb'], artifact)
    # pgBackRest picks the backup for a time target by whole-second stop times: the target
    # must fall in a later second than the newest backup's stop, or it is not chosen.
    stop = int((newest.get('timestamp') or {}).get('stop') or 0)
    while time.time() < stop + 1:
        time.sleep(0.05)
    marker, after, target, flushed = write_markers(primary, db, p['timeout'])
    kwargs, _env = as_os_user(repo_user, param='pgbackrest_repo_user')
    base = scratch.new_dir('pgbackrest', (kwargs['user'], kwargs['group']) if 'user' in kwargs
                           else None)
    data = os.path.join(base, 'data')
    result = dict(backup=newest.get('label'), marker_id=marker, after_id=after,
                  target_time=pb.format_time(target))
    failed = []
    began = time.monotonic()
    try:
        try:
            restored = pitr.restore(stanza, target='time', target_time=pb.format_time(target),
                                    restore_to='scratch', scratch_path=data,
                                    scratch_port=SCRATCH_PORT, repo_user=repo_user, config=config,
                                    archived_until=flushed, timeout=p['timeout'], metrics_dir='',
                                    lock_dir=scratch.base, pg_bin_dir=p['pg_bin_dir'])
        except BackupError as exc:  # e.g. a WAL segment the recovery needs is missing
            missing = _missing_segment(exc.msg)
            failed.append(dict(
                artifact='WAL segment %s of stanza %s' % (missing, stanza) if missing else artifact,
                error='restoring %s to %s: %s%s' % (
                    artifact, result['target_time'],
                    'WAL segment %s, the one after the last restored, is missing from the '
                    'archive or unreadable; ' % missing if missing else '', exc.msg)))
            restored = None
        result['restore_seconds'] = round(time.monotonic() - began, 3)
        if restored is not None:
            result.update(recovery_stopped_at=restored.get('recovery_stopped_at'),
                          timeline=restored.get('timeline'))
            failed += _check_scratch(p, data, db, marker, after, artifact)
    finally:
        _stop(p, data, repo_user)
    verify = pb.pgbackrest('verify', stanza, repo_user, config, check=False,
                           timeout=p['timeout'])
    if verify.returncode != 0:
        failed.append(dict(artifact='repository of stanza %s' % stanza,
                           error='pgbackrest verify failed: %s'
                                 % ((verify.stdout or '') + (verify.stderr or ''))[-STDERR_TAIL:]))
    point = result.get('recovery_stopped_at')
    recovered = pitr.parse_pg_time(point) if point else target
    job.gauges['drill_recovery_point_lag_seconds'] = round(
        (naming.utcnow() - recovered).total_seconds(), 3)
    job.gauges['drill_checks_failed'] = len(failed)
    job.size = (newest.get('info') or {}).get('size')
    result.update(failed_checks=failed, recovered_point=pb.format_time(recovered))
    return result


_RESTORED_RE = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
_ENDED_EARLY = 'recovery ended before configured recovery target was reached'


def _missing_segment(log_text):
    """The WAL segment a recovery that ended before its target needed next: the one after
    the last segment it restored (16 MiB segments: 256 per log file), or None."""
    restored = _RESTORED_RE.findall(log_text)
    if _ENDED_EARLY not in log_text or not restored:
        return None
    last = restored[-1]
    timeline, log, seg = last[:8], int(last[8:16], 16), int(last[16:], 16) + 1
    if seg > 0xFF:
        log, seg = log + 1, 0
    return '%s%08X%08X' % (timeline, log, seg)


def _check_scratch(p, data, db, marker, after, artifact):
    # As the restored cluster's superuser (its socket trusts local connections): the marker
    # login need not be one, and pg_amcheck --install-missing creates the extension.
    conn = Connection(dict(login_unix_socket=data, login_port=SCRATCH_PORT,
                           login_user=SCRATCH_SUPERUSER, pg_bin_dir=p['pg_bin_dir']))
    failed = []
    rows = conn.psql('SELECT id FROM %s WHERE id IN (%d, %d) ORDER BY id'
                     % (MARKER_TABLE, marker, after), db, what='reading the drill markers')
    found = [int(line) for line in rows.split()]
    if marker not in found:
        failed.append(dict(artifact=artifact, error='the marker row %d committed before the '
                           'recovery target is missing after the restore' % marker))
    if after in found:
        failed.append(dict(artifact=artifact, error='the row %d committed after the recovery '
                           'target was restored: recovery did not stop at the target' % after))
    check = conn.run([conn.tool('pg_amcheck'), '--all', '--install-missing', '--no-password'],
                     'pg_amcheck', check=False, timeout=p['timeout'])
    if check.returncode != 0:
        failed.append(dict(artifact=artifact, error='pg_amcheck of the restored cluster failed: %s'
                           % ((check.stdout or '') + (check.stderr or ''))[-STDERR_TAIL:]))
    return failed


def _stop(p, data, repo_user):
    if os.path.exists(os.path.join(data, 'postmaster.pid')):
        pb.run_as(repo_user, [os.path.join(p['pg_bin_dir'], 'pg_ctl'), '-D', data, '-m', 'fast',
                              '-w', 'stop'], param='pgbackrest_repo_user', check=False,
                  timeout=p['timeout'])
