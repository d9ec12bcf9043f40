# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shipping Redis snapshots to the backup host (the ``redis_snapshot`` channel of
``ship``): what this host holds, and the import of a snapshot that arrived whole."""

from __future__ import annotations

import os
import shutil
import time

from ansible_collections.codeb.backup.plugins.module_utils import (
    durable, metrics, naming, retention, ship,
)
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock
from ansible_collections.codeb.backup.plugins.module_utils.redis.options import (
    AOF_SUFFIX, DEFAULT_AOF_KEEP, DEFAULT_BACKUP_DIR, DEFAULT_INSTANCE, DEFAULT_KEEP_MIN,
    DEFAULT_RDB_MAX_AGE_HOURS, FORMATS, LOCK_NAME, METRIC_KIND, RDB_SUFFIX, SHIP_CHANNEL,
    validate_common,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.checks import (
    check_rdb, check_aof_tar,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.store import (
    Manifest, validate_snapshot_name, set_pointer, prune, newest,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.reconcile import reconcile


def import_snapshot(src, entry, backup_dir=DEFAULT_BACKUP_DIR, keep_min=DEFAULT_KEEP_MIN,
                    rdb_max_age_hours=DEFAULT_RDB_MAX_AGE_HOURS, aof_keep=DEFAULT_AOF_KEEP,
                    prune_old=True, lock_timeout=60):
    """The receiving side of shipping: take a shipped snapshot into ``backup_dir`` (the
    backup host's copy), verifying its sha256 on arrival against the source manifest
    ``entry``; then the Redis check tool, manifest, pointer, retention. Idempotent: already
    there -> unchanged."""
    began = time.monotonic()
    if not isinstance(entry, dict) or not entry.get('file') or not entry.get('sha256'):
        raise BackupError('entry must be the source manifest entry (with file and sha256)',
                          param='entry')
    name = validate_snapshot_name('entry.file', entry['file'])
    kind = entry.get('kind')
    if kind not in FORMATS or not name.endswith(RDB_SUFFIX if kind == 'rdb' else AOF_SUFFIX):
        raise BackupError('entry.kind must be rdb or aof and match the file name; got %r / %r'
                          % (kind, name), param='entry')
    naming.parse_timestamp('entry.time', entry.get('time'))
    validate_common(backup_dir, DEFAULT_INSTANCE)
    if not os.path.isfile(src):
        raise BackupError('src %s does not exist on this host' % src, param='src')
    final = os.path.join(backup_dir, name)
    known = Manifest(backup_dir).load().get(name) if os.path.isdir(backup_dir) else None
    if known and known.get('sha256') == entry['sha256'] and os.path.isfile(final):
        return dict(changed=False, file=final, sha256=entry['sha256'],
                    size_bytes=known['size_bytes'], duration_seconds=0, pruned=[])
    durable.ensure_dir(backup_dir)
    with job_lock(os.path.join(backup_dir, LOCK_NAME), 'redis_snapshot job in %s' % backup_dir,
                  wait=lock_timeout):
        reconciled = reconcile(backup_dir)
        known = Manifest(backup_dir).load().get(name)
        if known and known.get('sha256') == entry['sha256'] and os.path.isfile(final):
            # e.g. adopted just now: a killed import had committed it whole
            return dict(changed=bool(reconciled), file=final, sha256=entry['sha256'],
                        size_bytes=known['size_bytes'], duration_seconds=0, pruned=[],
                        reconciled=reconciled)
        with durable.atomic_path(final) as temp:
            with open(src, 'rb') as source:
                sha, size = durable.copy_hashed_to(source, temp)
            if sha != entry['sha256']:
                raise BackupError('%s arrived damaged: sha256 %s, the source manifest says %s; '
                                  'nothing was stored, ship it again' % (src, sha, entry['sha256']),
                                  param='src')
            if kind == 'rdb':
                check_rdb(temp, name='the shipped %s' % name)
            else:
                shutil.rmtree(check_aof_tar(temp, backup_dir), ignore_errors=True)
        record = dict(entry, sha256=sha, size_bytes=size, status='ok',
                      imported=naming.format_timestamp())
        for local_only in _LOCAL_FIELDS:  # facts of the source host
            record.pop(local_only, None)
        with Manifest(backup_dir).update() as entries:
            entries[name] = record
        set_pointer(backup_dir, kind, newest(backup_dir, kind))
        deleted = prune(backup_dir, keep_min=keep_min, rdb_max_age_hours=rdb_max_age_hours,
                        aof_keep=aof_keep) if prune_old else []
    return dict(changed=True, file=final, sha256=sha, size_bytes=size, pruned=deleted,
                duration_seconds=round(time.monotonic() - began, 3))


def held_sha256(backup_dir):
    """The sha256s of the good snapshots ``backup_dir`` holds (listed and present)."""
    return [e['sha256'] for e in Manifest(backup_dir).entries()
            if retention.is_good(e) and e.get('sha256')
            and os.path.isfile(os.path.join(backup_dir, e['file']))]


def _accept_shipped(path, entry, backup_dir, keep_min=DEFAULT_KEEP_MIN,
                    rdb_max_age_hours=DEFAULT_RDB_MAX_AGE_HOURS, aof_keep=DEFAULT_AOF_KEEP,
                    lock_timeout=60):
    """The receiving side of shipping: a file that arrived whole goes through the import."""
    return import_snapshot(path, entry, backup_dir=backup_dir, keep_min=keep_min,
                           rdb_max_age_hours=rdb_max_age_hours, aof_keep=aof_keep,
                           lock_timeout=lock_timeout)


ship.register_channel(SHIP_CHANNEL, held=held_sha256, accept=_accept_shipped,
                      options=dict(keep_min=int, rdb_max_age_hours=int, aof_keep=int,
                                   lock_timeout=float))


def ship_snapshots(backup_dir, target, remote_dir, instance=DEFAULT_INSTANCE,
                   metrics_dir=metrics.DEFAULT_TEXTFILE_DIR, lock_timeout=60,
                   keep_min=DEFAULT_KEEP_MIN, rdb_max_age_hours=DEFAULT_RDB_MAX_AGE_HOURS,
                   aof_keep=DEFAULT_AOF_KEEP):
    """Ship every good snapshot in ``backup_dir`` that the backup host lacks (oldest first),
    each verified on arrival; ``target`` a ``ship.Target`` (host None: ``remote_dir`` is on
    this host, and the retention settings here apply there; a remote backup host applies
    the ones in its forced command). Writes the ``redis_ship`` job metrics."""
    validate_common(backup_dir, instance)
    ship.validate_directory('ship_dir', remote_dir, None)
    if target.host is None and os.path.realpath(remote_dir) == os.path.realpath(backup_dir):
        return dict(changed=False, shipped=[], present=[], host='localhost',
                    directory=remote_dir, duration_seconds=0, size_bytes=0,
                    note='the backup root is this directory: nothing to ship')
    began = time.monotonic()
    with Job(METRIC_KIND['ship'], instance, metrics_dir,
             what='redis ship of %s to %s' % (backup_dir, target.host or remote_dir)) as job:
        with job_lock(os.path.join(backup_dir, LOCK_NAME), 'redis_snapshot in %s' % backup_dir,
                      wait=lock_timeout):
            artifacts = [(os.path.join(backup_dir, e['file']), e)
                         for e in Manifest(backup_dir).entries()
                         if retention.is_good(e) and os.path.isfile(os.path.join(backup_dir, e['file']))]
            artifacts = [(path, _ship_entry(e)) for path, e in artifacts]
            result = ship.push(artifacts, target, SHIP_CHANNEL, remote_dir, local_options=dict(
                keep_min=keep_min, rdb_max_age_hours=rdb_max_age_hours, aof_keep=aof_keep,
                lock_timeout=lock_timeout))
        job.size = sum(s['size_bytes'] for s in result['shipped'])
    result.update(duration_seconds=round(time.monotonic() - began, 3), size_bytes=job.size)
    return result


_LOCAL_FIELDS = ('path', 'present', 'verified', 'verified_at', 'verification_error', 'adopted')


def _ship_entry(entry):
    return {k: v for k, v in entry.items() if k not in _LOCAL_FIELDS}
