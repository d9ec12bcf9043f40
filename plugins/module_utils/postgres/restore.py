# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``state: restored``: restore one snapshot by swap.

A restore checks the sha256 first, restores into a fresh temporary database, compares the
row counts with the manifest, and only then swaps it in by renaming, so a failed restore
leaves the live database exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable, naming, process
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.postgres.connection import (
    Connection, ident, literal)
from ansible_collections.codeb.backup.plugins.module_utils.postgres.options import (
    KIND_RESTORE, check_options)
from ansible_collections.codeb.backup.plugins.module_utils.postgres.reconcile import (
    database_exists, drop_leftovers, helper_prefix, reconcile)
from ansible_collections.codeb.backup.plugins.module_utils.postgres.store import (
    LARGE_OBJECT_SQL, ROW_COUNT_SQL, locked, parse_counts, restore_marker_path, select_entry,
    verify_entry, zstd_path)

# Session settings of pg_restore's own connections into the temporary database (libpq
# PGOPTIONS); the server's configuration and every other session are left alone. Measured
# side by side with a plain serial pg_restore by bench/pg_snapshot_bench.py:
# - synchronous_commit=off: pg_restore commits once per table, index and constraint, and
#   each synchronous commit waits for a WAL flush (300 small tables: 1,510 flushes became
#   16, 1.15x a plain pg_restore instead of 0.86x; no gain on a few large tables). Safe
#   because the swap commits with a local flush (_durable), and WAL is flushed in order, so
#   nothing of the restore is acknowledged before it is durable; a crash before the swap
#   leaves the live database as it was (the next run drops the temporary one).
# - maintenance_work_mem=256MB (default 64MB): memory for the primary-key and index sorts;
#   1GB was no faster as a whole. One session per pg_restore worker.
# No CHECKPOINT before the swap: it cost 0.4-3 s per GB restored and writes every
# database's dirty buffers, for a guarantee the flushed swap already gives.
RESTORE_SESSION_SETTINGS = (('synchronous_commit', 'off'), ('maintenance_work_mem', '256MB'))


def restore(params, check_mode=False):
    """``state: restored``: verify, restore into a fresh database, check row counts, swap."""
    p = check_options(params)
    conn = Connection(p)
    db, target, backup_dir = p['database'], p['target_database'], p['backup_dir']
    with Job(KIND_RESTORE, target, p['metrics_dir'], check_mode,
             what='restore of database %r' % target) as job:
        entry = select_entry(backup_dir, db, p.get('snapshot'), good_only=True)
        path = os.path.join(backup_dir, entry['file'])
        method = (entry.get('compression') or 'none').split(':')[0]
        report = verify_entry(conn, backup_dir, entry, full=False)
        verify_seconds = job.duration()
        if not report['ok']:
            if not check_mode:
                with Manifest(backup_dir).update() as entries:
                    if entry['file'] in entries:
                        entries[entry['file']]['status'] = 'failed_verification'
                        entries[entry['file']]['verification_error'] = report['error']
            raise BackupError('refusing to restore %s: %s. The live database %r was not touched; '
                              'pick another snapshot (state: verified, snapshot: all lists them)'
                              % (entry['file'], report['error'], target), param='snapshot',
                              verification=report)
        conn.server_version(p['maintenance_db'])
        exists = database_exists(conn, p, target)
        if check_mode:
            return dict(changed=True, database=db, target_database=target, file=entry['file'],
                        sha256=entry['sha256'], replaced_existing=exists,
                        size_bytes=entry.get('size_bytes'), duration_seconds=job.duration(),
                        msg='would restore %s into %s' % (entry['file'], target))
        first, last = sorted(set([db, target]))[0], sorted(set([db, target]))[-1]
        with locked(p, first), (locked(p, last) if last != first else contextlib.nullcontext()):
            repaired = [reconcile(conn, p, name) for name in sorted(set([db, target]))]
            result = _restore_locked(conn, p, entry, path, method, exists)
        job.size = entry.get('size_bytes')
        result.update(duration_seconds=job.duration(), size_bytes=job.size, reconciled=repaired)
        result['timings']['verify_seconds'] = verify_seconds
        return result


def _restore_locked(conn, p, entry, path, method, exists):
    db, target, maint = p['database'], p['target_database'], p['maintenance_db']
    timings = {}
    leftovers = drop_leftovers(conn, p, target)
    suffix = os.urandom(3).hex()
    temp_db = helper_prefix('rst', target) + suffix
    old_db = helper_prefix('old', target) + suffix
    options = ''
    if exists:
        row = conn.psql(
            "SELECT pg_encoding_to_char(encoding) || '|' || datcollate || '|' || datctype "
            "|| '|' || pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s"
            % literal(target), maint, what='reading database %r settings' % target).strip()
        encoding, collate, ctype, owner = row.split('|')
        options = ' ENCODING %s LC_COLLATE %s LC_CTYPE %s OWNER %s' % (
            literal(encoding), literal(collate), literal(ctype), ident(owner))
    marker = restore_marker_path(p['backup_dir'], target)
    durable.atomic_write_json(marker, dict(database=target, pid=os.getpid(),
                                           time=naming.format_timestamp()))
    conn.psql('CREATE DATABASE %s TEMPLATE template0%s' % (ident(temp_db), options), maint,
              what='creating temporary database %r' % temp_db)
    swapped = cleaned = False
    try:
        step = time.monotonic()
        restore_into(conn, p, path, method, temp_db)
        timings['pg_restore_seconds'] = round(time.monotonic() - step, 3)
        step = time.monotonic()
        counts = parse_counts(conn.psql(ROW_COUNT_SQL, temp_db, 'counting restored rows')
                              .splitlines())
        large_objects = int(conn.psql(LARGE_OBJECT_SQL, temp_db, 'counting large objects'))
        row_check = compare_rows(entry, counts, large_objects, target)
        timings['row_check_seconds'] = round(time.monotonic() - step, 3)
        step = time.monotonic()
        if exists:
            _replace(conn, p, target, old_db, temp_db)
        else:
            conn.psql(_durable('ALTER DATABASE %s RENAME TO %s' % (ident(temp_db),
                                                                   ident(target))), maint,
                      what='renaming the restored database to %r' % target)
        swapped = True
    finally:
        try:
            if not swapped:
                conn.psql('DROP DATABASE IF EXISTS %s WITH (FORCE)' % ident(temp_db), maint,
                          what='dropping temporary database %r' % temp_db)
            cleaned = True
        finally:  # the marker goes only when nothing of the restore is left to repair
            if cleaned and not _closed(conn, p, target):
                durable.discard(marker)
                durable.fsync_dir(p['backup_dir'])
    timings['swap_seconds'] = round(time.monotonic() - step, 3)
    return dict(changed=True, database=db, target_database=target, file=entry['file'],
                time=entry['time'], sha256=entry['sha256'], replaced_existing=exists,
                timings=timings, row_check=row_check,
                tables=counts, large_objects=large_objects, leftovers_dropped=leftovers)


def compare_rows(entry, counts, large_objects, target, where=None):
    """Raise unless the restored ``counts`` and ``large_objects`` equal what the snapshot
    ``entry`` recorded; ``where`` replaces the default note that the live database
    ``target`` was not touched (a restore drill restores into scratch space)."""
    if entry.get('adopted') and 'tables' not in entry:
        return 'skipped: adopted snapshot, its row counts were never recorded'
    where = where or 'the live database %r was not touched' % target
    expected = entry.get('tables') or {}
    mismatch = ['%s: snapshot %s, restored %s' % (t, expected.get(t), counts.get(t))
                for t in sorted(set(expected) | set(counts)) if expected.get(t) != counts.get(t)]
    if mismatch:
        raise BackupError('restored data of %s does not match its manifest (%s); %s'
                          % (entry['file'], '; '.join(mismatch[:5]), where))
    if large_objects != int(entry.get('large_objects') or 0):
        raise BackupError('restored %d large objects from %s, the snapshot recorded %s; %s'
                          % (large_objects, entry['file'], entry.get('large_objects'), where))
    return 'ok'


def _replace(conn, p, target, old_db, temp_db):
    """Swap the restored ``temp_db`` in as ``target`` (the caller's restore marker lets a
    killed run's successor reopen ``target``); if any step after the swap fails, the
    original is put back."""
    maint = p['maintenance_db']
    conn.psql('ALTER DATABASE %s ALLOW_CONNECTIONS false' % ident(target), maint,
              what='closing database %r to new connections' % target)
    swapped = False
    try:
        conn.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                  "datname = %s AND pid <> pg_backend_pid()" % literal(target), maint,
                  what='disconnecting sessions of %r' % target)
        _swap(conn, maint, target, aside=old_db, incoming=temp_db)
        swapped = True
        conn.psql('DROP DATABASE %s WITH (FORCE)' % ident(old_db), maint,
                  what='dropping the replaced database')
    except BaseException as exc:
        if swapped:  # the restored copy is live: put the original back under its name
            _swap(conn, maint, target, aside=temp_db, incoming=old_db)
            if isinstance(exc, BackupError):
                exc.msg = '%s; the original database %r was put back' % (exc.msg, target)
                exc.args = (exc.msg,)
        conn.psql('ALTER DATABASE %s ALLOW_CONNECTIONS true' % ident(target), maint,
                  what='reopening database %r' % target)
        raise


def _closed(conn, p, database):
    try:
        out = conn.psql('SELECT NOT datallowconn FROM pg_database WHERE datname = %s'
                        % literal(database), p['maintenance_db'], what='reading datallowconn')
    except BackupError:
        return True  # cannot tell: keep the marker, the next run checks again
    return out.strip() == 't'


def _durable(statements):
    """``statements`` in one transaction whose commit waits for the local WAL flush even if
    the server, role or database sets ``synchronous_commit=off``: WAL is flushed in order,
    so everything the restore wrote before (asynchronously, RESTORE_SESSION_SETTINGS) is
    durable before the restored database takes the target's name. Only ``off`` is raised
    (to ``local``): a configured wait for synchronous standbys is kept."""
    return ("BEGIN; SELECT set_config('synchronous_commit', 'local', true) "
            "WHERE current_setting('synchronous_commit') = 'off'; %s; COMMIT;" % statements)


def _swap(conn, maint, target, aside, incoming):
    """Rename ``target`` to ``aside`` and ``incoming`` to ``target`` in one transaction: the
    target name always names a whole database."""
    last = None
    for _attempt in range(5):
        try:
            conn.psql(_durable('ALTER DATABASE %s RENAME TO %s; ALTER DATABASE %s RENAME TO %s'
                               % (ident(target), ident(aside), ident(incoming),
                                  ident(target))), maint,
                      what='swapping %r in as %r' % (incoming, target))
            return
        except BackupError as exc:  # a session that was just terminating
            last = exc
            if 'being accessed by other users' not in exc.msg:
                raise
            conn.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                      "datname = %s AND pid <> pg_backend_pid()" % literal(target), maint,
                      what='disconnecting sessions of %r' % target)
            time.sleep(0.5)
    raise last


def _source_argv(path, method):
    """A command writing the archive at ``path`` to stdout, uncompressed."""
    return [zstd_path(), '-q', '-dc', path] if method == 'zstd' else ['cat', path]


def restore_into(conn, p, path, method, database):
    """pg_restore ``path`` into the empty ``database`` with ``jobs`` workers."""
    pg_restore = conn.tool('pg_restore')
    base = [pg_restore, '--no-password', '--exit-on-error', '--dbname=%s' % database]
    env = conn.env()
    if RESTORE_SESSION_SETTINGS:
        env['PGOPTIONS'] = ' '.join('-c %s=%s' % setting for setting in RESTORE_SESSION_SETTINGS)
    kwargs = dict(env=env, stdout=subprocess.DEVNULL)
    jobs = p['jobs']
    err = tempfile.TemporaryFile()
    scratch = None
    try:
        kwargs['stderr'] = err
        if jobs > 1 and (method == 'zstd' or conn.switches_user):
            # pg_restore -j needs a seekable file it can open: decompress (or copy) next to
            # the snapshot, readable only by the restoring user.
            # Named after the snapshot, so a killed restore's leftover is removed as a stale
            # temporary of that database by the next run holding its lock.
            scratch = tempfile.mkdtemp(
                prefix='%s%s.restore-' % (durable.TEMP_PREFIX, os.path.basename(path)),
                dir=p['backup_dir'])
            code = _restore_copy(conn, base + ['-j', str(jobs)], path, method,
                                 os.path.join(scratch, 'archive.dump'), kwargs)
        elif method == 'zstd' or conn.switches_user and os.path.isfile(path):
            # Streamed: the tools' OS user never needs to read the private backup_dir.
            feed = process.spawn(_source_argv(path, method), stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, preexec_fn=process.die_with_parent)
            try:
                code = conn.run(base, 'pg_restore', check=False, stdin=feed.stdout,
                                **kwargs).returncode
            finally:
                feed.stdout.close()
            code = code or feed.wait()
        else:
            code = conn.run(base + ['-j', str(jobs), path], 'pg_restore', check=False,
                            **kwargs).returncode
        if code:
            err.seek(0)
            raise conn.error(err.read().decode('utf-8', 'replace'),
                             'pg_restore into temporary database %r' % database, code)
    finally:
        err.close()
        if scratch:
            durable.discard(scratch)


def _restore_copy(conn, argv, path, method, plain, kwargs):
    """Write the uncompressed archive to ``plain`` and run ``argv`` (pg_restore -j) on it;
    return its exit code."""
    with open(plain, 'wb') as out:
        if process.run(_source_argv(path, method), stdout=out, stderr=kwargs['stderr'],
                       check=False).returncode:
            kwargs['stderr'].seek(0)
            raise BackupError('reading %s failed: %s' % (
                path, kwargs['stderr'].read().decode('utf-8', 'replace')))
    if not conn.switches_user:
        return conn.run(argv + [plain], 'pg_restore', check=False, **kwargs).returncode
    # The os_user cannot traverse the 0700 backup_dir: hand pg_restore an open descriptor
    # of its own copy; its workers reopen it through /proc/self/fd.
    owner = conn.popen_kwargs()
    os.chown(plain, owner['user'], owner['group'])
    fd = os.open(plain, os.O_RDONLY)
    try:
        return conn.run(argv + ['/proc/self/fd/%d' % fd], 'pg_restore', check=False,
                        pass_fds=(fd,), **kwargs).returncode
    finally:
        os.close(fd)
