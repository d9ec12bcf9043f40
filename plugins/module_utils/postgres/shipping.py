# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shipping pg_dump snapshots to the backup host (the ``pg_snapshot`` channel of ``ship``):
what the backup host's snapshot store holds, and the import of a snapshot that arrived
whole into that store (same names, manifest, checks and retention as on the storage host)."""

from __future__ import annotations

import os
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable, metrics, naming, ship
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.retention import is_good
from ansible_collections.codeb.backup.plugins.module_utils.postgres.connection import (
    DEFAULT_PG_BIN_DIR, Connection)
from ansible_collections.codeb.backup.plugins.module_utils.postgres.options import (
    DEFAULT_KEEP_DAYS, DEFAULT_KEEP_MIN, DEFAULT_LOCK_TIMEOUT, KIND, check_backup_dir)
from ansible_collections.codeb.backup.plugins.module_utils.postgres.reconcile import reconcile
from ansible_collections.codeb.backup.plugins.module_utils.postgres.store import (
    check_archive, entries_for, locked, name_re, prune_locked, pruned_result)

SHIP_CHANNEL = 'pg_snapshot'
SHIP_KIND = 'pg_ship'
# Facts of the source host's copy, not of the shipped file.
_LOCAL_FIELDS = ('path', 'present', 'verified', 'verified_at', 'verification_error', 'adopted')


def _store_params(backup_dir, database, keep_days, keep_min, lock_timeout):
    """The parameter dict the store's lock, reconcile and retention take."""
    for name, value, low in (('keep_days', keep_days, 0), ('keep_min', keep_min, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise BackupError('%s must be an integer >= %d; got %r' % (name, low, value),
                              param=name)
    return dict(backup_dir=check_backup_dir(backup_dir), database=database, keep_days=keep_days,
                keep_min=keep_min, lock_timeout=float(lock_timeout), maintenance_db='postgres')


def _check_entry(entry):
    """The source manifest entry of a custom-format snapshot file; returns its method."""
    if not isinstance(entry, dict) or entry.get('kind') != KIND:
        raise BackupError('entry must be a pg_snapshot manifest entry (kind %s)' % KIND,
                          param='entry')
    database = naming.validate_name('entry.database', entry.get('database'))
    naming.parse_timestamp('entry.time', entry.get('time'))
    match = name_re(database).match(str(entry.get('file')))
    if not match or match.group(1) != entry['time']:
        raise BackupError('entry.file %r is not a snapshot name of database %r taken at %s'
                          % (entry.get('file'), database, entry.get('time')), param='entry.file')
    if entry.get('format', 'custom') != 'custom':
        raise BackupError('only custom-format snapshots (one file) can be shipped; %s is %s'
                          % (entry['file'], entry.get('format')), param='entry')
    return 'zstd' if entry['file'].endswith('.zst') else 'none'


def import_snapshot(src, entry, backup_dir, keep_days=DEFAULT_KEEP_DAYS,
                    keep_min=DEFAULT_KEEP_MIN, pg_bin_dir=DEFAULT_PG_BIN_DIR,
                    lock_timeout=DEFAULT_LOCK_TIMEOUT, prune_old=True):
    """Take a shipped snapshot ``src`` into the store ``backup_dir``: sha256 against the
    source manifest ``entry``, the archive check every snapshot gets (``zstd -t`` and
    ``pg_restore --list``, of the right database), the manifest entry, then this store's
    own retention (``keep_days``, never below ``keep_min`` good ones). Idempotent: a
    snapshot already held is left unchanged."""
    began = time.monotonic()
    method = _check_entry(entry)
    database, name = entry['database'], entry['file']
    p = _store_params(backup_dir, database, keep_days, keep_min, lock_timeout)
    if not os.path.isfile(src):
        raise BackupError('src %s does not exist on this host' % src, param='src')
    conn = Connection(dict(pg_bin_dir=pg_bin_dir))
    final = os.path.join(p['backup_dir'], name)
    durable.ensure_dir(p['backup_dir'])
    with locked(p, database):
        reconciled = reconcile(conn, p, database)
        known = Manifest(p['backup_dir']).load().get(name)
        if known and known.get('sha256') == entry['sha256'] and os.path.isfile(final):
            return dict(changed=bool(reconciled['adopted'] or reconciled['removed']),
                        file=final, sha256=entry['sha256'], size_bytes=known['size_bytes'],
                        duration_seconds=0, pruned=[])
        with durable.atomic_path(final) as temp:
            with open(src, 'rb') as source:
                sha, size = durable.copy_hashed_to(source, temp)
            if sha != entry['sha256']:
                raise BackupError('%s arrived damaged: sha256 %s, the source manifest says %s; '
                                  'nothing was stored, ship it again' % (name, sha, entry['sha256']),
                                  param='src')
            toc = check_archive(conn, temp, method, database, full=True)[0]
        record = {k: v for k, v in entry.items() if k not in _LOCAL_FIELDS}
        record.update(sha256=sha, size_bytes=size, status='ok', toc_entries=toc,
                      verified_at=naming.format_timestamp(), imported=naming.format_timestamp())
        with Manifest(p['backup_dir']).update() as entries:
            entries[name] = record
        pruned = prune_locked(p, fresh=(name,))[0] if prune_old else []
    return dict(changed=True, file=final, sha256=sha, size_bytes=size, toc_entries=toc,
                pruned=pruned_result(pruned), duration_seconds=round(time.monotonic() - began, 3))


def held_sha256(backup_dir):
    """The sha256s of the good snapshots ``backup_dir`` holds (listed and present)."""
    return [e['sha256'] for e in entries_for(Manifest(backup_dir))
            if is_good(e) and e.get('sha256')
            and os.path.isfile(os.path.join(backup_dir, e['file']))]


def _accept_shipped(path, entry, backup_dir, keep_days=DEFAULT_KEEP_DAYS,
                    keep_min=DEFAULT_KEEP_MIN, pg_bin_dir=DEFAULT_PG_BIN_DIR,
                    lock_timeout=DEFAULT_LOCK_TIMEOUT):
    """The receiving side of shipping: a file that arrived whole goes through the import."""
    return import_snapshot(path, entry, backup_dir, keep_days=keep_days, keep_min=keep_min,
                           pg_bin_dir=pg_bin_dir, lock_timeout=lock_timeout)


ship.register_channel(SHIP_CHANNEL, held=held_sha256, accept=_accept_shipped,
                      options=dict(keep_days=int, keep_min=int, pg_bin_dir=str,
                                   lock_timeout=float))


def ship_snapshots(backup_dir, target, remote_dir, database=None,
                   metrics_dir=metrics.DEFAULT_TEXTFILE_DIR, lock_timeout=DEFAULT_LOCK_TIMEOUT,
                   keep_days=DEFAULT_KEEP_DAYS, keep_min=DEFAULT_KEEP_MIN,
                   pg_bin_dir=DEFAULT_PG_BIN_DIR):
    """Ship every good custom-format snapshot in ``backup_dir`` (of ``database``, or of
    every database) that the backup host lacks, oldest first, each verified on arrival;
    ``target`` a ``ship.Target`` (host None: ``remote_dir`` is on this host and the
    retention settings here apply there; a remote backup host applies the ones in its
    forced command). Each database is read under its snapshot lock. Writes the
    ``pg_ship`` job metrics (target: the database, or ``all``)."""
    if database is not None:
        naming.validate_name('database', database)
    backup_dir = check_backup_dir(backup_dir)
    ship.validate_directory('ship_dir', remote_dir, None)
    if target.host is None and os.path.realpath(remote_dir) == os.path.realpath(backup_dir):
        return dict(changed=False, shipped=[], present=[], skipped=[], host='localhost',
                    directory=remote_dir, duration_seconds=0, size_bytes=0,
                    note='the backup root is this directory: nothing to ship')
    began = time.monotonic()
    result = dict(changed=False, shipped=[], present=[], skipped=[], channel=SHIP_CHANNEL,
                  host=target.host or 'localhost', directory=remote_dir)
    with Job(SHIP_KIND, database or 'all', metrics_dir,
             what='pg ship of %s to %s' % (backup_dir, target.host or remote_dir)) as job:
        entries = entries_for(Manifest(backup_dir), database) if os.path.isdir(backup_dir) else []
        databases = sorted(set(e['database'] for e in entries))
        for name in databases:
            p = _store_params(backup_dir, name, keep_days, keep_min, lock_timeout)
            with locked(p, name):
                artifacts = []
                for entry in entries_for(Manifest(backup_dir), name):
                    path = os.path.join(backup_dir, entry['file'])
                    if not is_good(entry) or not os.path.exists(path):
                        continue
                    if entry.get('format', 'custom') != 'custom' or not os.path.isfile(path):
                        result['skipped'].append(dict(file=entry['file'], reason='format %s is a '
                                                      'directory: not shipped' % entry.get('format')))
                        continue
                    artifacts.append((path, {k: v for k, v in entry.items()
                                             if k not in _LOCAL_FIELDS}))
                out = ship.push(artifacts, target, SHIP_CHANNEL, remote_dir, local_options=dict(
                    keep_days=keep_days, keep_min=keep_min, pg_bin_dir=pg_bin_dir,
                    lock_timeout=lock_timeout))
            result['shipped'] += out['shipped']
            result['present'] += out['present']
        job.size = sum(s['size_bytes'] for s in result['shipped'])
    result.update(changed=bool(result['shipped']), databases=databases, size_bytes=job.size,
                  duration_seconds=round(time.monotonic() - began, 3))
    return result
