# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-database PostgreSQL snapshots: the ``present``, ``verified`` and ``pruned`` states
and the dispatch of every state (``restored`` lives in ``restore``).

Every snapshot is written under a temporary name, checked with ``pg_restore --list``,
committed by rename and then recorded in the manifest with its sha256, size, duration,
server version and the exact per-table row counts of the dumped data (counted in the very
MVCC snapshot pg_dump used, via ``pg_export_snapshot``).

Used by the ``pg_snapshot`` module and by the ``codeb-backup pg-snapshot`` host command
(cron); nothing here depends on Ansible.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

from ansible_collections.codeb.backup.plugins.module_utils import durable, naming, process
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.postgres import restore as restore_state
from ansible_collections.codeb.backup.plugins.module_utils.postgres.connection import Connection
from ansible_collections.codeb.backup.plugins.module_utils.postgres.options import (
    KIND, KIND_PRUNE, KIND_VERIFY, PURPOSES, STATES, check_options)
from ansible_collections.codeb.backup.plugins.module_utils.postgres.reconcile import reconcile
from ansible_collections.codeb.backup.plugins.module_utils.postgres.store import (
    DELETING, LARGE_OBJECT_SQL, ROW_COUNT_SQL, artifact_sha256, artifact_size, check_archive,
    entries_for, locked, parse_counts, plan_prune, prune_locked, pruned_result,
    restore_marker_path, select_entry, snapshot_name, verify_entry, zstd_path)


def run_state(params, check_mode=False):
    """Run the job ``params['state']`` asks for; return its result dict."""
    state = params.get('state') or 'present'
    if state not in STATES:
        raise BackupError('state must be one of %s; got %r' % (', '.join(STATES), state),
                          param='state')
    if state == 'present':
        return snapshot(params, check_mode)
    if state == 'verified':
        return verify(params, check_mode)
    if state == 'restored':
        return restore_state.restore(params, check_mode)
    return prune(params, check_mode)


# --------------------------------------------------------------------------- present

def _run_dump(conn, p, snapshot_id, temp):
    """pg_dump (| zstd) into ``temp``; raise on any failure of either tool."""
    method, level = p['_method'], p['_level']
    argv = [conn.tool('pg_dump'), '-w', '--dbname=%s' % p['database'],
            '--snapshot=%s' % snapshot_id]
    errs = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    try:
        if p['format'] == 'directory':
            durable.discard(temp)  # pg_dump creates the directory itself
            argv += ['-Fd', '-Z', str(level if method == 'gzip' else 0), '-j', str(p['jobs']),
                     '-f', temp]
            if conn.switches_user:
                raise BackupError('format directory cannot be combined with os_user: pg_dump '
                                  'would write the files as %s; connect with login_host and '
                                  'login_password instead' % conn.os_user, param='os_user')
            procs = [conn.spawn(argv, stdout=subprocess.DEVNULL, stderr=errs[0])]
        else:
            argv += ['-Fc', '-Z', str(level if method == 'gzip' else 0)]
            with open(temp, 'wb') as out:
                if method == 'zstd':
                    zstd = zstd_path()
                    dump = conn.spawn(argv, stdout=subprocess.PIPE, stderr=errs[0])
                    pack = process.spawn([zstd, '-q', '-T0', '-%d' % level, '-c'],
                                         stdin=dump.stdout, stdout=out, stderr=errs[1],
                                         preexec_fn=process.die_with_parent)
                    dump.stdout.close()
                    procs = [dump, pack]
                else:
                    procs = [conn.spawn(argv, stdout=out, stderr=errs[0])]
        codes = [proc.wait() for proc in procs]
        if any(codes):
            errs[0].seek(0)
            errs[1].seek(0)
            text = (errs[0].read() + errs[1].read()).decode('utf-8', 'replace')
            raise conn.error(text, 'pg_dump of database %r' % p['database'], max(codes))
    finally:
        for handle in errs:
            handle.close()


def _check_mode_snapshot(p, server_version, now, job):
    db, backup_dir = p['database'], p['backup_dir']
    taken = set(e['time'] for e in entries_for(Manifest(backup_dir), db)) \
        if os.path.isdir(backup_dir) else set()
    name = snapshot_name(db, naming.unique_timestamp(taken, now), p['_method'])
    prune_plan, _condemned = plan_prune(p, now, extra_newest=True)
    return dict(changed=True, database=db, server_version=server_version, file=name,
                path=os.path.join(backup_dir, name), format=p['format'],
                compression=p['compression'], purpose=p['purpose'],
                pruned=pruned_result(prune_plan), size_bytes=0,
                duration_seconds=job.duration(), msg='would snapshot database %r' % db)


def snapshot(params, check_mode=False, now=None):
    """``state: present``: dump one database, check it, record it, then prune."""
    p = check_options(params)
    conn = Connection(p)
    db, backup_dir = p['database'], p['backup_dir']
    with Job(PURPOSES[p['purpose']], db, p['metrics_dir'], check_mode,
             what='pg_snapshot of database %r' % db) as job:
        try:  # before anything is written: a bad connection leaves no trace
            server_version = conn.server_version(db)
        except BackupError:
            if check_mode or not os.path.lexists(restore_marker_path(backup_dir, db)):
                raise
            server_version = None  # closed by an interrupted restore: reconcile reopens it
        if check_mode:
            return _check_mode_snapshot(p, server_version, now, job)
        durable.ensure_dir(backup_dir, 0o700)
        with locked(p, db):
            repaired = reconcile(conn, p, db)
            server_version = server_version or conn.server_version(db)
            manifest = Manifest(backup_dir)
            taken = set(e['time'] for e in entries_for(manifest, db))
            stamp = naming.unique_timestamp(taken, now)
            name = snapshot_name(db, stamp, p['_method'])
            final = os.path.join(backup_dir, name)
            with conn.session(db) as session:
                session.query_lines('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY',
                                    'starting the snapshot transaction')
                snap = session.query_lines('SELECT pg_export_snapshot()',
                                           'exporting the snapshot of database %r' % db)[0]
                with durable.atomic_path(final) as temp:
                    # Count rows in pg_dump's own snapshot while it runs (same MVCC view).
                    session.send(ROW_COUNT_SQL)
                    _run_dump(conn, p, snap, temp)
                    # zstd exited 0, so its frames are whole; check the archive's TOC.
                    toc = check_archive(conn, temp, p['_method'], db, full=False)[0]
                    digest = artifact_sha256(temp)
                    size = artifact_size(temp)
                    tables = parse_counts(session.read('counting rows'))
                    large_objects = int(session.query_lines(LARGE_OBJECT_SQL,
                                                            'counting large objects')[0])
            duration = job.duration()
            entry = dict(file=name, time=stamp, kind=KIND, database=db,
                         sha256=digest, size_bytes=size, duration_seconds=duration, status='ok',
                         verified_at=naming.format_timestamp(), format=p['format'],
                         compression=p['compression'], server_version=server_version,
                         pg_dump_version=conn.tool_version('pg_dump'), toc_entries=toc,
                         tables=tables, large_objects=large_objects, purpose=p['purpose'])
            with manifest.update() as entries:
                entries[name] = entry
            pruned, condemned = prune_locked(p, now, fresh=(name,))
        job.size = size
        return dict(changed=True, database=db, file=name, path=final, sha256=digest,
                    size_bytes=size, duration_seconds=duration, server_version=server_version,
                    format=p['format'], compression=p['compression'], tables=tables,
                    large_objects=large_objects, toc_entries=toc, purpose=p['purpose'],
                    pruned=pruned_result(pruned), failed_verification=condemned,
                    stale_temps_removed=repaired['stale_temps_removed'], reconciled=repaired)


# --------------------------------------------------------------------------- pruned

def prune(params, check_mode=False, now=None):
    """``state: pruned``: keep ``keep_days`` days, never fewer than ``keep_min`` good ones."""
    p = check_options(params)
    db = p['database']
    with Job(KIND_PRUNE, db, p['metrics_dir'], check_mode,
             what='pruning snapshots of database %r' % db) as job:
        repaired = None
        if check_mode or not os.path.isdir(p['backup_dir']):
            delete, condemned = plan_prune(p, now)
        else:
            with locked(p, db):
                repaired = reconcile(Connection(p), p, db)
                delete, condemned = prune_locked(p, now)
        kept = [e['file'] for e in entries_for(Manifest(p['backup_dir']), db)] \
            if os.path.isdir(p['backup_dir']) else []
        deleted = set(e['file'] for e in delete)
        job.size = sum(e.get('size_bytes') or 0 for e in delete)
        result = dict(changed=bool(delete or condemned or repaired and any(repaired.values())),
                      database=db, pruned=pruned_result(delete),
                      kept=[name for name in kept if name not in deleted],
                      failed_verification=condemned, reconciled=repaired, size_bytes=job.size,
                      duration_seconds=job.duration())
        if check_mode:
            result['msg'] = 'would delete %d snapshot(s) of database %r' % (len(delete), db)
        return result


# --------------------------------------------------------------------------- verified

def _outcome(report):
    """The manifest fields a verification report establishes."""
    if report['ok']:
        return dict(status='ok', verification_error=None)
    return dict(status='failed_verification', verification_error=report.get('error'))


def _differs(entry, report):
    outcome = _outcome(report)
    return entry is not None and entry.get('status') != DELETING and (
        entry.get('status', 'ok') != outcome['status']
        or entry.get('verification_error') != outcome['verification_error'])


def _record_reports(p, reports):
    """Record each report whose outcome differs from the manifest (status, error and
    ``verified_at``, the time the status was established); return True when the manifest
    was rewritten. A verification that confirms what is recorded writes nothing: its time
    is in the verification job's metrics."""
    changed = False
    stamp = naming.format_timestamp()
    with locked(p, p['database']):
        with Manifest(p['backup_dir']).update() as entries:
            for report in reports:
                entry = entries.get(report['file'])
                if not _differs(entry, report):
                    continue
                outcome = _outcome(report)
                entry.update(status=outcome['status'], verified_at=stamp)
                if outcome['verification_error'] is None:
                    entry.pop('verification_error', None)
                else:
                    entry['verification_error'] = outcome['verification_error']
                changed = True
    return changed


def verify(params, check_mode=False):
    """``state: verified``: re-check the named, latest or ``all`` snapshots. The manifest
    status becomes ``failed_verification`` only on evidence against a snapshot (sha256,
    size, the archive's own check); a missing tool or an unreadable disk fails the run and
    changes no status. ``changed`` is true exactly when the manifest was rewritten (in
    check mode: would be)."""
    p = check_options(params)
    conn = Connection(p)
    db, backup_dir = p['database'], p['backup_dir']
    with Job(KIND_VERIFY, db, p['metrics_dir'], check_mode,
             what='verification of database %r snapshots' % db) as job:
        if not check_mode and os.path.isdir(backup_dir):
            with locked(p, db):
                reconcile(conn, p, db)
        if p.get('snapshot') == 'all':
            chosen = entries_for(Manifest(backup_dir), db) if os.path.isdir(backup_dir) else []
            if not chosen:
                raise BackupError('no snapshot of database %r in %s' % (db, backup_dir),
                                  param='snapshot')
        else:
            chosen = [select_entry(backup_dir, db, p.get('snapshot'), good_only=False)]
        # Long: runs without the lock, so the nightly snapshot need not wait for it.
        reports = [verify_entry(conn, backup_dir, entry) for entry in chosen]
        if check_mode:
            changed = any(_differs(entry, report) for entry, report in zip(chosen, reports))
        else:
            changed = _record_reports(p, reports)
        bad = [r for r in reports if not r['ok']]
        job.size = sum(r.get('size_bytes') or 0 for r in reports)
        result = dict(changed=changed, database=db, snapshots=reports,
                      verified=not bad, duration_seconds=job.duration(), size_bytes=job.size)
        if check_mode and changed:
            result['msg'] = 'would record a changed verification status in the manifest'
        if bad:
            raise BackupError('%d of %d snapshot(s) of database %r failed verification: %s' % (
                len(bad), len(reports), db,
                '; '.join('%s: %s' % (r['file'], r['error']) for r in bad)),
                param='snapshot',
                **{k: v for k, v in result.items() if k not in ('changed', 'msg')})
        return result
