# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The snapshot store in ``backup_dir``: snapshot names, the manifest (every entry checked
before it is used), the ``current.*`` pointers, retention in durable steps, listing and
choosing a snapshot."""

from __future__ import annotations

import datetime
import os

from ansible_collections.codeb.backup.plugins.module_utils import durable, naming, retention
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest as _Manifest
from ansible_collections.codeb.backup.plugins.module_utils.redis.options import (
    AOF_PREFIX, AOF_SUFFIX, DEFAULT_AOF_KEEP, DEFAULT_BACKUP_DIR, DEFAULT_KEEP_MIN,
    DEFAULT_RDB_MAX_AGE_HOURS, FORMATS, POINTERS, RDB_PREFIX, RDB_SUFFIX, STATUSES,
)

# The file name of each kind of snapshot; group 1 is its timestamp.
_ARTIFACT_RE = {
    'rdb': naming.artifact_re(RDB_PREFIX, RDB_SUFFIX),
    'aof': naming.artifact_re(AOF_PREFIX, AOF_SUFFIX),
}


class Manifest(_Manifest):
    """The snapshot manifest. Every entry is input: besides the plain file name the shared
    manifest checks, an entry must be a snapshot of its kind with a sha256, a size and a
    known status, or the whole manifest is refused (naming it) before anything is opened,
    renamed or deleted."""

    def load(self):
        entries = super().load()
        for name, entry in entries.items():
            problem = _entry_problem(name, entry)
            if problem:
                raise BackupError(
                    'manifest %s holds an entry that is not a Redis snapshot of %s (%r: %s); '
                    'nothing was changed. Inspect the manifest: it may have been tampered with.'
                    % (self.path, self.directory, name, problem), param='manifest')
        return entries


def _entry_problem(name, entry):
    kind = entry.get('kind')
    if kind not in FORMATS:
        return 'kind must be rdb or aof, not %r' % (kind,)
    if not isinstance(name, str) or not _ARTIFACT_RE[kind].match(name):
        return 'not a %s snapshot file name' % kind
    try:
        naming.parse_timestamp('time', entry.get('time'))
    except BackupError:
        return 'time %r is not a UTC timestamp' % (entry.get('time'),)
    if not isinstance(entry.get('sha256'), str) or not naming.SHA256_RE.match(entry['sha256']):
        return 'sha256 must be 64 hex digits, not %r' % (entry.get('sha256'),)
    size = entry.get('size_bytes')
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return 'size_bytes must be a non-negative integer, not %r' % (size,)
    for field in ('keys', 'expires'):
        value = entry.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return '%s must be an integer, not %r' % (field, value)
    if entry.get('status', 'ok') not in STATUSES:
        return 'status must be one of %s, not %r' % (', '.join(STATUSES), entry.get('status'))
    return None


def artifact_kind(name):
    """``(kind, stamp)`` if ``name`` is a snapshot file name, else ``(None, None)``."""
    for kind, pattern in _ARTIFACT_RE.items():
        match = pattern.match(name) if isinstance(name, str) else None
        if match:
            return kind, match.group(1)
    return None, None


def validate_snapshot_name(param, value):
    """A snapshot is named by its file name or its UTC timestamp, nothing else (so it can
    never name a path outside the backup directory)."""
    if not naming.is_timestamp(value) and artifact_kind(value)[0] is None:
        raise BackupError('%s must be latest, a snapshot file name like '
                          'dump-2026-01-07T10:00:00.rdb or appendonly-2026-01-07T10:00:00.aof.tar, '
                          'or a timestamp like 2026-01-07T10:00:00; got %r' % (param, value),
                          param=param)
    return value


def artifact_name(kind, stamp):
    if kind == 'rdb':
        return '%s%s%s' % (RDB_PREFIX, stamp, RDB_SUFFIX)
    return '%s%s%s' % (AOF_PREFIX, stamp, AOF_SUFFIX)


def set_pointer(backup_dir, kind, file_name):
    """Point ``current.rdb`` / ``current.aof`` at ``file_name`` (a relative symlink),
    replacing the old pointer atomically."""
    final = os.path.join(backup_dir, POINTERS[kind])
    if os.path.islink(final) and os.readlink(final) == file_name:
        return False
    temp = os.path.join(backup_dir, '%s%s.%d' % (durable.TEMP_PREFIX, POINTERS[kind], os.getpid()))
    durable.discard(temp)
    os.symlink(file_name, temp)
    os.rename(temp, final)
    durable.fsync_dir(backup_dir)
    return True


def plan_prune(entries, now, keep_min=DEFAULT_KEEP_MIN, rdb_max_age_hours=DEFAULT_RDB_MAX_AGE_HOURS,
               aof_keep=DEFAULT_AOF_KEEP):
    """``(keep, delete)`` over both kinds: RDB older than ``rdb_max_age_hours`` (never the
    newest ``keep_min`` good ones); AOF only the newest ``aof_keep``."""
    rdb = [e for e in entries if e.get('kind') == 'rdb']
    aof = [e for e in entries if e.get('kind') == 'aof']
    keep_r, del_r = retention.plan_retention(
        rdb, now, max_age=datetime.timedelta(hours=int(rdb_max_age_hours)), keep_min=keep_min)
    if int(aof_keep) < 1:
        raise BackupError('aof_keep must be at least 1; got %r' % (aof_keep,), param='aof_keep')
    keep_a, del_a = retention.plan_retention(aof, now, keep_min=int(aof_keep),
                                             max_count=int(aof_keep))
    return keep_r + keep_a, del_r + del_a


def prune(backup_dir, now=None, keep_min=DEFAULT_KEEP_MIN,
          rdb_max_age_hours=DEFAULT_RDB_MAX_AGE_HOURS, aof_keep=DEFAULT_AOF_KEEP):
    """Apply retention in three durable steps: mark the entries ``status: deleting``, delete
    the files, drop the entries. A run killed in between leaves entries marked
    ``deleting`` (never counted as good, never restored or shipped) that ``reconcile``
    finishes. Returns one ``dict(file, kind, time, reason)`` per deleted snapshot (the shape
    of every ``pruned`` result)."""
    now = now or naming.utcnow()
    manifest = Manifest(backup_dir)
    deleted = []
    stamp = naming.format_timestamp()
    with manifest.update() as entries:
        _keep, delete = plan_prune([e for e in entries.values() if e.get('status') != 'deleting'],
                                   now, keep_min, rdb_max_age_hours, aof_keep)
        for entry in delete:
            entries[entry['file']].update(status='deleting', deleting_since=stamp,
                                          reason=entry.get('reason'))
            deleted.append(dict(file=entry['file'], kind=entry.get('kind'), time=entry.get('time'),
                                reason=entry.get('reason')))
    finish_deletes(backup_dir, manifest, [d['file'] for d in deleted])
    return deleted


def finish_deletes(backup_dir, manifest, names):
    """Delete the files of entries marked ``deleting``, then drop those entries."""
    if not names:
        return
    for name in names:
        durable.discard(os.path.join(backup_dir, naming.validate_file_name('file', name)))
    durable.fsync_dir(backup_dir)
    with manifest.update() as entries:
        for name in names:
            if entries.get(name, {}).get('status') == 'deleting':
                entries.pop(name)


def repair_pointers(backup_dir):
    """``current.*`` names the newest good snapshot of its kind (after adoption, pruning or a
    snapshot marked bad)."""
    changed = []
    good = [e for e in Manifest(backup_dir).entries() if retention.is_good(e)]
    for kind in FORMATS:
        of_kind = [e for e in good if e.get('kind') == kind]
        if of_kind and set_pointer(backup_dir, kind, of_kind[-1]['file']):
            changed.append(POINTERS[kind])
    return changed


def list_snapshots(backup_dir=DEFAULT_BACKUP_DIR, verify=False):
    """Manifest entries newest first; with ``verify`` each gets ``verified`` (sha256 match)."""
    if not os.path.isdir(backup_dir):
        return []
    entries = list(reversed(Manifest(backup_dir).entries()))
    for entry in entries:
        path = os.path.join(backup_dir, entry['file'])
        entry['path'] = path
        entry['present'] = os.path.isfile(path)
        if verify:
            entry['verified'] = entry['present'] and durable.sha256_file(path) == entry['sha256']
    return entries


def resolve_snapshot(backup_dir, snapshot, snapshot_format=None):
    """Find a manifest entry by ``latest``, file name or timestamp. Raises naming ``snapshot``."""
    if snapshot_format is not None and snapshot_format not in FORMATS:
        raise BackupError('snapshot_format must be one of %s; got %r'
                          % (', '.join(FORMATS), snapshot_format), param='snapshot_format')
    if snapshot != 'latest':
        validate_snapshot_name('snapshot', snapshot)
    entries = [e for e in reversed(Manifest(backup_dir).entries()) if retention.is_good(e)]
    if snapshot_format:
        entries = [e for e in entries if e.get('kind') == snapshot_format]
    if snapshot == 'latest':
        if not snapshot_format:
            entries = [e for e in entries if e.get('kind') == 'rdb'] or entries
        if not entries:
            raise BackupError('no %ssnapshot in %s to restore' % (
                snapshot_format + ' ' if snapshot_format else '', backup_dir), param='snapshot')
        return entries[0]
    for entry in entries:
        if snapshot in (entry['file'], entry['time']):
            if snapshot == entry['time'] and not snapshot_format and entry.get('kind') != 'rdb':
                continue  # a bare timestamp means the RDB unless snapshot_format says aof
            return entry
    for entry in entries:
        if snapshot == entry['time']:
            return entry
    for entry in Manifest(backup_dir).entries():
        if snapshot == entry['file'] and not retention.is_good(entry):
            raise BackupError('snapshot %s is marked %s (%s): refusing it; pick another '
                              '(codeb-backup redis-list), or re-check it with codeb-backup '
                              'redis-verify' % (entry['file'], entry.get('status'),
                                                entry.get('verification_error') or 'no details'),
                              param='snapshot')
    known = ', '.join(e['file'] for e in entries[:5]) or 'none'
    raise BackupError('snapshot %r is not in the manifest of %s; use latest, a file name or a '
                      'timestamp (newest: %s)' % (snapshot, backup_dir, known), param='snapshot')


def mark_failed(backup_dir, name, error):
    """Record evidence against a snapshot (call only with an ArtifactError's message):
    ``status: failed_verification``, so it is never restored as latest, shipped, or counted
    towards keep_min."""
    with Manifest(backup_dir).update() as entries:
        entry = entries.get(name)
        if entry is not None and entry.get('status') != 'deleting':
            entry.update(status='failed_verification', verification_error=error,
                         verified_at=naming.format_timestamp())
    repair_pointers(backup_dir)


def newest(backup_dir, kind):
    entries = [e for e in Manifest(backup_dir).entries() if e.get('kind') == kind
               and retention.is_good(e)]
    return entries[-1]['file']
