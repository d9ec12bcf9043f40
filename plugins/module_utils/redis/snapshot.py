# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``state=present``: the RDB and AOF snapshots of one run, each its own job with its own
metrics, then the pointers and retention."""

from __future__ import annotations

import datetime
import os
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable, metrics, naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock
from ansible_collections.codeb.backup.plugins.module_utils.redis.options import (
    DEFAULT_AOF_KEEP, DEFAULT_BACKUP_DIR, DEFAULT_INSTANCE, DEFAULT_KEEP_MIN,
    DEFAULT_RDB_MAX_AGE_HOURS, DEFAULT_TIMEOUT, FORMATS, LOCK_NAME, METRIC_KIND, validate_common,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.connection import (
    connect, server_layout, count_keys, rewrite_percentage, redis,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.store import (
    Manifest, artifact_kind, artifact_name, set_pointer, prune,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.rdb import snapshot_rdb
from ansible_collections.codeb.backup.plugins.module_utils.redis.aof import snapshot_aof
from ansible_collections.codeb.backup.plugins.module_utils.redis.reconcile import reconcile


class _Jobs(object):
    """One ``job.Job`` per snapshot kind of a run. A failure common to the run (Redis
    unreachable, the lock, reconcile, retention) fails every kind still open; a kind's own
    failure only that kind. Each job writes its metrics exactly once, with job.Job's policy,
    whatever the exception; ``close`` then raises the first error."""

    def __init__(self, kinds, instance, metrics_dir):
        self.jobs = {}
        for kind in kinds:
            job = Job(METRIC_KIND[kind], instance, metrics_dir,
                      what='redis %s snapshot of %s' % (kind, instance))
            self.jobs[kind] = job.start()
        self.failed = {}

    def drop(self, kind):
        self.jobs.pop(kind, None)

    def fail(self, kind, exc):
        self.failed.setdefault(kind, exc)

    def close(self, common=None, **details):
        errors = []
        for kind, job in self.jobs.items():
            error = job.finish(self.failed.get(kind, common))
            if error is not None:
                errors.append(error)
        if common is not None and not isinstance(common, Exception):
            raise common  # KeyboardInterrupt / SystemExit: recorded, passed on
        unique = []
        for error in errors:
            if not any(error is seen for seen in unique):
                unique.append(error)
        errors = unique
        if errors:
            first = errors[0]
            for key, value in details.items():
                first.details.setdefault(key, value)
            if len(errors) > 1:
                first.details.setdefault('errors', [e.msg for e in errors])
            raise first


def predict_snapshot(conn, backup_dir=DEFAULT_BACKUP_DIR, instance=DEFAULT_INSTANCE,
                     formats=FORMATS, data_dir=None, timeout=DEFAULT_TIMEOUT, **_ignored):
    """Check mode: validate, connect and read only; say what a run would write."""
    validate_common(backup_dir, instance, formats, timeout)
    client = connect(conn)
    layout = server_layout(client, data_dir)
    stamp = naming.format_timestamp()
    would, skipped = [], {}
    for kind in formats:
        if kind == 'aof' and not layout['appendonly']:
            skipped['aof'] = 'appendonly is no on this instance'
            continue
        would.append(artifact_name(kind, stamp))
    return dict(changed=bool(would), would_write=[os.path.join(backup_dir, n) for n in would],
                skipped=skipped, backup_dir=backup_dir, appendonly=layout['appendonly'],
                keys=count_keys(client), duration_seconds=0, size_bytes=0)


def take_snapshot(conn, backup_dir=DEFAULT_BACKUP_DIR, instance=DEFAULT_INSTANCE, formats=FORMATS,
                  data_dir=None, timeout=DEFAULT_TIMEOUT, keep_min=DEFAULT_KEEP_MIN,
                  rdb_max_age_hours=DEFAULT_RDB_MAX_AGE_HOURS, aof_keep=DEFAULT_AOF_KEEP,
                  prune_old=True, verify_load=True, metrics_dir=metrics.DEFAULT_TEXTFILE_DIR,
                  lock_timeout=60):
    """``state: present``: RDB and/or AOF snapshots, pointers, retention, metrics.

    Each kind is one job (metrics ``redis_rdb`` / ``redis_aof``): a failure of one kind
    does not stop the other; a failure common to the run fails both."""
    validate_common(backup_dir, instance, formats, timeout)
    if int(keep_min) < 1:
        raise BackupError('keep_min must be at least 1; got %r' % (keep_min,), param='keep_min')
    began = time.monotonic()
    jobs = _Jobs(formats, instance, metrics_dir)
    results, skipped, deleted, reconciled = [], {}, [], {}
    client = None
    common = None
    try:
        client = connect(conn)
        layout = server_layout(client, data_dir)
        durable.ensure_dir(backup_dir)
        with job_lock(os.path.join(backup_dir, LOCK_NAME), 'redis_snapshot into %s' % backup_dir,
                      wait=lock_timeout):
            reconciled = reconcile(backup_dir, client, layout, instance)
            manifest = Manifest(backup_dir)
            for kind in formats:
                if kind == 'aof' and not layout['appendonly']:
                    skipped['aof'] = 'appendonly is no on this instance'
                    jobs.drop('aof')
                    # no AOF job here (RedisAOFDisabled covers that): drop a stale failure an
                    # earlier unreachable run recorded, so BackupFailed does not fire
                    metrics.remove_job_metrics(metrics_dir, METRIC_KIND['aof'], instance)
                    continue
                try:
                    entry = _snapshot_kind(client, layout, backup_dir, manifest, kind, instance,
                                           timeout, verify_load)
                except Exception as exc:
                    jobs.fail(kind, exc)
                    continue
                jobs.jobs[kind].size = entry['size_bytes']
                results.append(entry)
            if prune_old and not jobs.failed:
                deleted = prune(backup_dir, keep_min=keep_min, rdb_max_age_hours=rdb_max_age_hours,
                                aof_keep=aof_keep)
    except BaseException as exc:
        common = exc
    percentage = _percentage_or_none(client)
    jobs.close(common, snapshots=results, aof_rewrite_percentage=percentage)
    # changed: a snapshot, a retention delete or a clean-up of a killed run was written
    result = dict(changed=bool(results or deleted or reconciled), snapshots=results,
                  skipped=skipped, pruned=deleted,
                  backup_dir=backup_dir, instance=instance,
                  files=[os.path.join(backup_dir, e['file']) for e in results],
                  size_bytes=sum(e['size_bytes'] for e in results),
                  aof_rewrite_percentage=percentage,
                  duration_seconds=round(time.monotonic() - began, 3))
    if reconciled:
        result['reconciled'] = reconciled
    return result


def _percentage_or_none(client):
    """The live auto-aof-rewrite-percentage (0 means automatic rewrites are off)."""
    if client is None:
        return None
    try:
        return int(rewrite_percentage(client))
    except (BackupError, ValueError, redis.exceptions.RedisError):
        return None


def _snapshot_kind(client, layout, backup_dir, manifest, kind, instance, timeout, verify_load):
    taken = set(e['time'] for e in manifest.entries() if e.get('kind') == kind)
    # never older than a snapshot already there (runs within one second bump into the
    # future), so the newest name is always the newest snapshot
    stamps = [artifact_kind(e['file'])[1] for e in manifest.entries()
              if e.get('kind') == kind] + list(taken)
    newest = max(stamps) if stamps else None
    moment = naming.utcnow()
    if newest and newest >= naming.format_timestamp(moment):
        moment = naming.parse_timestamp('time', newest) + datetime.timedelta(seconds=1)
    stamp = naming.unique_timestamp(taken, moment)
    while os.path.lexists(os.path.join(backup_dir, artifact_name(kind, stamp))):
        taken.add(stamp)  # a file the manifest does not list: never overwrite it
        stamp = naming.unique_timestamp(taken)
    if kind == 'rdb':
        entry = snapshot_rdb(client, layout, backup_dir, stamp, timeout)
    else:
        entry = snapshot_aof(client, layout, backup_dir, stamp, timeout, verify_load)
    entry['instance'] = instance
    with manifest.update() as entries:
        entries[entry['file']] = entry
    set_pointer(backup_dir, kind, entry['file'])
    return entry
