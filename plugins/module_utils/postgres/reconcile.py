# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Repairing what a killed or failed job of one database left behind, and the helper
databases a restore works with. Every job that writes runs ``reconcile`` first, under the
database's lock, so an interrupted run is finished by whichever job comes next."""

from __future__ import annotations

import hashlib
import os

from ansible_collections.codeb.backup.plugins.module_utils import durable, naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.postgres.connection import (
    ident, literal)
from ansible_collections.codeb.backup.plugins.module_utils.postgres.options import KIND
from ansible_collections.codeb.backup.plugins.module_utils.postgres.store import (
    DELETING, artifact_sha256, artifact_size, check_archive, name_re, remove_stale,
    restore_marker_path)


def database_exists(conn, params, name):
    out = conn.psql('SELECT 1 FROM pg_database WHERE datname = %s' % literal(name),
                    params['maintenance_db'], what='looking up database %r' % name)
    return out.strip() == '1'


def helper_prefix(kind, target):
    """Name prefix of a restore's temporary (``rst``) or replaced (``old``) database of
    ``target``: fixed per target, so a killed restore's databases can be found again."""
    return '_codeb_%s_%s_' % (kind, hashlib.sha1(target.encode()).hexdigest()[:8])


def drop_leftovers(conn, p, target):
    """Drop temporary databases a killed restore of ``target`` left (under its lock)."""
    names = []
    for kind in ('rst', 'old'):
        out = conn.psql('SELECT datname FROM pg_database WHERE starts_with(datname, %s)'
                        % literal(helper_prefix(kind, target)), p['maintenance_db'],
                        what='listing leftovers')
        names += [n for n in out.splitlines() if n]
    for name in names:
        conn.psql('DROP DATABASE IF EXISTS %s WITH (FORCE)' % ident(name), p['maintenance_db'],
                  what='dropping leftover database %r' % name)
    return names


def reconcile(conn, p, database):
    """Repair what a killed or failed run of ``database``'s jobs left, while holding that
    database's lock: after an interrupted restore reopen the database and drop the
    restore's temporary databases, remove temporaries, finish an interrupted prune, adopt
    whole snapshots the manifest does not list (a kill between the rename and the manifest
    write) and remove unlisted ones that fail their check. Returns what was done."""
    backup_dir = p['backup_dir']
    done = dict(stale_temps_removed=remove_stale(backup_dir, database),
                reopened=False, leftover_databases_dropped=[],
                prune_finished=[], adopted=[], removed=[])
    if os.path.lexists(restore_marker_path(backup_dir, database)):
        done['reopened'], done['leftover_databases_dropped'] = \
            _finish_interrupted_restore(conn, p, database)
    manifest = Manifest(backup_dir)
    listed = manifest.load()
    unfinished = sorted(name for name, e in listed.items()
                        if e.get('kind') == KIND and e.get('database') == database
                        and e.get('status') == DELETING)
    adopted = {}
    pattern = name_re(database)
    for name in sorted(os.listdir(backup_dir)):
        match = pattern.match(name)
        if not match or name in listed:
            continue
        try:  # outside the manifest's lock: other databases' jobs need not wait for this
            adopted[name] = _adopt(conn, backup_dir, database, name, match.group(1))
        except ArtifactError as exc:
            durable.discard(os.path.join(backup_dir, name))
            done['removed'].append(dict(file=name, reason=exc.msg))
    for name in unfinished:
        durable.discard(os.path.join(backup_dir, name))
    if unfinished or done['removed']:
        durable.fsync_dir(backup_dir)
    with manifest.update() as entries:  # also removes a killed manifest write's temporary
        for name in unfinished:
            entries.pop(name, None)
        for name, entry in adopted.items():
            entries.setdefault(name, entry)
    done['prune_finished'] = unfinished
    done['adopted'] = sorted(adopted)
    return done


def _adopt(conn, backup_dir, database, name, stamp):
    """A manifest entry for a whole snapshot found under its final name but not listed.
    Its row counts were never recorded, so a restore of it checks sha256 and the archive
    but cannot compare rows (``adopted`` says so)."""
    path = os.path.join(backup_dir, name)
    method = 'zstd' if name.endswith('.zst') else 'none'
    toc, header = check_archive(conn, path, method, database, full=True)
    if method == 'none' and header.get('Compression', '0') not in ('0', 'none'):
        method = 'gzip'
    return dict(file=name, time=stamp, kind=KIND, database=database, sha256=artifact_sha256(path),
                size_bytes=artifact_size(path), status='ok', adopted=True,
                verified_at=naming.format_timestamp(),
                format='directory' if os.path.isdir(path) else 'custom', compression=method,
                toc_entries=toc)


def _finish_interrupted_restore(conn, p, database):
    """A restore into ``database`` was killed: reopen it (the restore may have closed it
    to connections) and drop the restore's temporary databases. ``(reopened, dropped)``"""
    reopened = database_exists(conn, p, database)
    if reopened:
        conn.psql('ALTER DATABASE %s ALLOW_CONNECTIONS true' % ident(database),
                  p['maintenance_db'],
                  what='reopening database %r after an interrupted restore' % database)
    dropped = drop_leftovers(conn, p, database)
    durable.discard(restore_marker_path(p['backup_dir'], database))
    durable.fsync_dir(p['backup_dir'])
    return reopened, dropped
