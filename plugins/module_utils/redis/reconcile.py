# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Undo what a killed or out-of-space run left in ``backup_dir`` (first thing under the
job lock of every run that writes there)."""

from __future__ import annotations

import os
import shutil

from ansible_collections.codeb.backup.plugins.module_utils import durable, naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError
from ansible_collections.codeb.backup.plugins.module_utils.redis.checks import (
    check_rdb, read_aof_manifest, check_aof_tar,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.scratch import (
    stop_leftover_scratch,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.store import (
    Manifest, artifact_kind, finish_deletes, repair_pointers,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.aof import restore_rewrite_setting


def _adopt(backup_dir, name, work_dir, instance=None, redis_version=None):
    """A snapshot under its final name that no entry lists (a run killed between the
    rename and the manifest write): check it like a new one; return its entry. Raises
    ArtifactError if it fails its check (the caller removes it)."""
    path = os.path.join(backup_dir, name)
    kind, stamp = artifact_kind(name)
    sha, size = durable.sha256_file(path), os.path.getsize(path)
    entry = dict(file=name, kind=kind, time=stamp, sha256=sha, size_bytes=size, status='ok',
                 adopted=naming.format_timestamp())
    if kind == 'rdb':
        entry['keys'], entry['expires'] = check_rdb(path, name=path)
    else:
        extract = check_aof_tar(path, work_dir)
        try:
            manifest_name = [n for n in os.listdir(extract) if n.endswith('.manifest')][0]
            entry.update(keys=None, appendfilename=manifest_name[:-len('.manifest')],
                         files=read_aof_manifest(os.path.join(extract, manifest_name),
                                                 artifact=path)[1])
        finally:
            shutil.rmtree(extract, ignore_errors=True)
    if instance:
        entry['instance'] = instance
    if redis_version:
        entry['redis_version'] = redis_version
    return entry


def _remove_restore_temps(layout):
    """What a killed restore left in Redis's data directory: its extracted AOF set, its
    staging dir, a temp of the installed dump.rdb (names only a restore writes there)."""
    data = layout['dir']
    prefixes = tuple(durable.TEMP_PREFIX + p for p in (
        'restore-', 'aof-', (layout.get('dbfilename') or 'dump.rdb') + '.'))
    removed = []
    for name in sorted(os.listdir(data)):
        if name.startswith(prefixes):
            durable.discard(os.path.join(data, name))
            removed.append(os.path.join(data, name))
    if removed:
        durable.fsync_dir(data)
    return removed


def reconcile(backup_dir, client=None, layout=None, instance=None):
    """Undo what killed or out-of-space runs left in ``backup_dir``; call under the job's
    lock, before anything else. In order: stop a leftover scratch redis-server and remove
    its directory; put back an ``auto-aof-rewrite-percentage`` a killed AOF snapshot left
    at 0 (needs ``client``); remove every temporary (``.tmp-*``: partial copies, AOF
    staging dirs, pointer and manifest temps; with ``layout`` also a killed restore's in
    Redis's data directory); finish deletes marked ``deleting``; adopt each whole snapshot no
    entry lists (or remove it if it fails its check); point ``current.*`` at the newest
    good snapshots. Only ArtifactError evidence removes a file; any other failure (a
    missing tool, a full disk) fails the run and leaves the file for the next one."""
    report = {}
    scratch = stop_leftover_scratch(backup_dir)
    if scratch:
        report['scratch_server'] = scratch
    if client is not None:
        rewrite = restore_rewrite_setting(client, backup_dir)
        if rewrite:
            report['aof_rewrite'] = rewrite
    removed = durable.remove_stale_temps(backup_dir)
    if layout and os.path.isdir(layout.get('dir') or ''):
        removed += _remove_restore_temps(layout)
    if removed:
        report['removed'] = removed
    manifest = Manifest(backup_dir)
    entries = manifest.load()
    deleting = sorted(n for n, e in entries.items() if e.get('status') == 'deleting')
    if deleting:
        finish_deletes(backup_dir, manifest, deleting)
        report['finished_deletes'] = deleting
    unlisted = sorted(n for n in os.listdir(backup_dir) if artifact_kind(n)[0]
                      and n not in entries and not os.path.islink(os.path.join(backup_dir, n))
                      and os.path.isfile(os.path.join(backup_dir, n)))
    adopted, rejected = {}, []
    for name in unlisted:
        try:
            adopted[name] = _adopt(backup_dir, name, backup_dir, instance,
                                   (layout or {}).get('redis_version'))
        except ArtifactError as exc:
            durable.discard(os.path.join(backup_dir, name))
            durable.fsync_dir(backup_dir)
            rejected.append(dict(file=name, error=exc.msg))
    if adopted:
        with manifest.update() as current:
            for name, entry in adopted.items():
                current.setdefault(name, entry)
        report['adopted'] = sorted(adopted)
    if rejected:
        report['removed_damaged'] = rejected
    pointers = repair_pointers(backup_dir)
    if pointers:
        report['pointers'] = pointers
    return report
