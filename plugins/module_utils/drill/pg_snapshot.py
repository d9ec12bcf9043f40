# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pg_dump snapshot drill: each database's newest snapshot (or every kept one)
restored into a scratch database of a scratch PostgreSQL cluster the drill starts itself
(initdb into the scratch space, no TCP listener, its socket in a private directory), row
counts compared with the manifest, the database dropped and the cluster removed.

The checks and the restore are the snapshot restore's own (``store.verify_entry``,
``restore.restore_into``, ``restore.compare_rows``); nothing in the store changes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

from ansible_collections.codeb.backup.plugins.module_utils import naming, process
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.postgres.connection import (
    Connection, as_os_user, ident)
from ansible_collections.codeb.backup.plugins.module_utils.postgres.restore import (
    compare_rows, restore_into)
from ansible_collections.codeb.backup.plugins.module_utils.postgres.store import (
    LARGE_OBJECT_SQL, ROW_COUNT_SQL, entries_for, parse_counts, verify_entry)
from ansible_collections.codeb.backup.plugins.module_utils.process import STDERR_TAIL
from ansible_collections.codeb.backup.plugins.module_utils.retention import is_good
from ansible_collections.codeb.backup.plugins.module_utils.drill.scratch import check_free_space

# Free space a restore needs, as a multiple of the snapshot's size: a compressed custom
# archive restores to several times its size (tables plus rebuilt indexes).
SPACE_FACTOR = dict(compressed=8, none=3)
# The scratch cluster's port: it listens on no TCP address, only on a socket in its own
# directory, so no port of the host can clash with it.
SCRATCH_PORT = 5432
_POLL = 0.1


def targets(p):
    if not os.path.isdir(p['pg_backup_dir']):
        raise BackupError('pg_backup_dir %s does not exist: no snapshots to drill'
                          % p['pg_backup_dir'], param='pg_backup_dir')
    if p['pg_databases']:
        return list(p['pg_databases'])
    found = sorted(set(e.get('database') for e in entries_for(Manifest(p['pg_backup_dir']))))
    if not found:
        raise BackupError('the manifest of pg_backup_dir %s lists no snapshot to drill'
                          % p['pg_backup_dir'], param='pg_backup_dir')
    return found


def label(target):
    return target


@contextlib.contextmanager
def environment(p, scratch):
    """A connection to the scratch cluster: the one given by ``pg_scratch_socket``, or one
    started (and removed) here."""
    if p['pg_scratch_socket']:
        yield Connection(dict(login_unix_socket=p['pg_scratch_socket'],
                              login_port=p['pg_scratch_port'], pg_bin_dir=p['pg_bin_dir']))
        return
    kwargs, _env = as_os_user(p['pg_os_user'], param='pg_os_user')
    owner = (kwargs['user'], kwargs['group']) if 'user' in kwargs else None
    base = scratch.new_dir('pg', owner)
    data = os.path.join(base, 'data')
    log = os.path.join(base, 'postgres.log')
    conn = Connection(dict(login_unix_socket=base, login_port=SCRATCH_PORT,
                           pg_bin_dir=p['pg_bin_dir']))
    process.run([conn.tool('initdb'), '-D', data, '-U', 'postgres', '--auth-local=trust',
                 '--auth-host=reject', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync',
                 '--no-instructions'], what='initdb of the scratch cluster',
                timeout=p['timeout'], **kwargs)
    settings = dict(listen_addresses="", port=SCRATCH_PORT, unix_socket_directories=base,
                    archive_mode='off', fsync='off', full_page_writes='off',
                    synchronous_commit='off', max_connections=20, logging_collector='off')
    argv = [conn.tool('postgres'), '-D', data]
    for name in sorted(settings):
        argv += ['-c', '%s=%s' % (name, settings[name])]
    with open(log, 'ab') as log_handle:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log_handle,
                                preexec_fn=process.die_with_parent, **kwargs)
    try:
        scratch.started(proc.pid, 'postgres', data)
        _wait_ready(conn, proc, log, p['timeout'])
        yield conn
    finally:
        scratch.stop(proc.pid)
        proc.wait()


def _wait_ready(conn, proc, log, timeout):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise BackupError('the scratch PostgreSQL cluster did not start; the end of its log '
                              '%s:\n%s' % (log, _tail(log)))
        if conn.run([conn.tool('pg_isready')], 'pg_isready', check=False).returncode == 0:
            return
        if time.monotonic() >= deadline:
            raise BackupError('the scratch PostgreSQL cluster did not accept connections within '
                              '%s s' % timeout, param='timeout')
        time.sleep(_POLL)


def _tail(path):
    try:
        with open(path, 'rb') as handle:
            return handle.read().decode('utf-8', 'replace')[-STDERR_TAIL:]
    except OSError:
        return ''


def drill(p, scratch, conn, database, job):
    """Restore ``database``'s newest good snapshot (all kept with ``pg_every_snapshot``);
    return the result, or raise listing every failed check by snapshot file name."""
    backup_dir = p['pg_backup_dir']
    entries = [e for e in entries_for(Manifest(backup_dir), database) if is_good(e)]
    if not entries:
        raise BackupError('no good snapshot of database %r in %s to drill'
                          % (database, backup_dir), param='pg_databases')
    chosen = list(reversed(entries)) if p['pg_every_snapshot'] else [entries[-1]]
    newest = naming.parse_timestamp('time', entries[-1]['time'])
    job.gauges['drill_recovery_point_lag_seconds'] = round(
        (naming.utcnow() - newest).total_seconds(), 3)
    checks, failed = [], []
    for entry in chosen:
        check = _drill_one(p, scratch, conn, entry)
        checks.append(check)
        if not check['ok']:
            failed.append(dict(artifact=entry['file'], error=check['error']))
    job.gauges['drill_checks_failed'] = len(failed)
    job.size = sum(e.get('size_bytes') or 0 for e in chosen)
    return dict(database=database, snapshots=checks, failed_checks=failed,
                recovered_point=entries[-1]['time'])


def _drill_one(p, scratch, conn, entry):
    backup_dir = p['pg_backup_dir']
    path = os.path.join(backup_dir, entry['file'])
    method = (entry.get('compression') or 'none').split(':')[0]
    factor = SPACE_FACTOR['none' if method == 'none' else 'compressed']
    check_free_space(scratch.base, (entry.get('size_bytes') or 0) * factor,
                     p['scratch_reserve_mb'], entry['file'])
    began = time.monotonic()
    result = dict(file=entry['file'], time=entry['time'], ok=False)
    report = verify_entry(conn, backup_dir, entry, full=False)
    if not report['ok']:
        result['error'] = report['error']
        return result
    scratch_db = '_codeb_drill_' + os.urandom(4).hex()
    conn.psql('CREATE DATABASE %s TEMPLATE template0' % ident(scratch_db), 'postgres',
              what='creating the scratch database')
    try:
        try:
            restore_into(conn, dict(jobs=1, backup_dir=backup_dir), path, method, scratch_db)
            counts = parse_counts(conn.psql(ROW_COUNT_SQL, scratch_db, 'counting restored rows')
                                  .splitlines())
            large_objects = int(conn.psql(LARGE_OBJECT_SQL, scratch_db, 'counting large objects'))
            result['row_check'] = compare_rows(entry, counts, large_objects, scratch_db,
                                               where='found by the restore drill')
        except BackupError as exc:
            result['error'] = 'restoring %s: %s' % (entry['file'], exc.msg)
            return result
        result.update(ok=True, tables=len(counts), rows=sum(counts.values()),
                      large_objects=large_objects)
    finally:
        conn.psql('DROP DATABASE IF EXISTS %s WITH (FORCE)' % ident(scratch_db), 'postgres',
                  what='dropping the scratch database')
        result['seconds'] = round(time.monotonic() - began, 3)
    return result
