# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``state=verified``: re-check stored snapshots and record the outcome in the manifest."""

from __future__ import annotations

import contextlib
import os
import shutil
import time

from ansible_collections.codeb.backup.plugins.module_utils import metrics, naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError, BackupError
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock
from ansible_collections.codeb.backup.plugins.module_utils.redis.options import (
    DEFAULT_BACKUP_DIR, DEFAULT_INSTANCE, FORMATS, LOCK_NAME, METRIC_KIND, validate_common,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.checks import verify_artifact
from ansible_collections.codeb.backup.plugins.module_utils.redis.store import (
    Manifest, validate_snapshot_name, repair_pointers, resolve_snapshot,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.reconcile import reconcile


def verify_snapshots(backup_dir=DEFAULT_BACKUP_DIR, snapshot='all', snapshot_format=None,
                     instance=DEFAULT_INSTANCE, metrics_dir=metrics.DEFAULT_TEXTFILE_DIR,
                     lock_timeout=60, check_mode=False):
    """``state: verified``: re-check ``all`` snapshots (or ``latest``, a name, a timestamp):
    size and sha256 against the manifest, then redis-check-rdb / redis-check-aof.

    Only evidence (ArtifactError) marks a snapshot ``failed_verification``; one that passes
    is ``ok`` again. If the check itself cannot run (tool missing, scratch space full),
    the run fails and no snapshot's status changes. Metrics kind ``redis_verify``."""
    validate_common(backup_dir, instance)
    if snapshot_format is not None and snapshot_format not in FORMATS:
        raise BackupError('snapshot_format must be one of %s; got %r'
                          % (', '.join(FORMATS), snapshot_format), param='snapshot_format')
    if snapshot not in ('all', 'latest'):
        validate_snapshot_name('snapshot', snapshot)
    if not os.path.isdir(backup_dir):
        raise BackupError('backup_dir %s does not exist: nothing to verify' % backup_dir,
                          param='backup_dir')
    began = time.monotonic()
    with Job(METRIC_KIND['verify'], instance, metrics_dir, check_mode=check_mode,
             what='redis verification of %s' % backup_dir) as job:
        lock = contextlib.nullcontext() if check_mode else job_lock(
            os.path.join(backup_dir, LOCK_NAME), 'redis_snapshot job in %s' % backup_dir,
            wait=lock_timeout)
        with lock:
            reconciled = {} if check_mode else reconcile(backup_dir, instance=instance)
            entries = [e for e in Manifest(backup_dir).entries() if e.get('status') != 'deleting']
            if snapshot_format:
                entries = [e for e in entries if e.get('kind') == snapshot_format]
            if snapshot != 'all':
                chosen = resolve_snapshot(backup_dir, snapshot, snapshot_format)
                entries = [e for e in entries if e['file'] == chosen['file']]
            reports = []
            for entry in reversed(entries):
                report = dict(file=entry['file'], kind=entry['kind'], size_bytes=entry['size_bytes'],
                              previous_status=entry.get('status', 'ok'))
                extract = None
                try:
                    extract = verify_artifact(backup_dir, entry, work_dir=backup_dir)
                    report.update(ok=True, status='ok')
                except ArtifactError as exc:
                    report.update(ok=False, status='failed_verification', error=exc.msg)
                finally:
                    if extract:
                        shutil.rmtree(extract, ignore_errors=True)
                reports.append(report)
            # The manifest is rewritten only where a status changed, so a second run over
            # the same snapshots writes nothing and reports changed=False.
            moved = [r for r in reports if r['status'] != r['previous_status']]
            if not check_mode and moved:
                _record(backup_dir, moved)
            changed = bool(moved or reconciled)
        job.size = sum(r['size_bytes'] for r in reports)
        bad = [r for r in reports if not r['ok']]
        if bad:
            raise ArtifactError('%d of %d snapshot(s) in %s failed verification and are marked '
                                'failed_verification: %s' % (
                                    len(bad), len(reports), backup_dir,
                                    '; '.join('%s: %s' % (r['file'], r['error']) for r in bad)),
                                param='snapshot', snapshots=reports, changed=changed)
    result = dict(changed=changed, snapshots=reports, verified=True, backup_dir=backup_dir,
                  size_bytes=job.size, duration_seconds=round(time.monotonic() - began, 3))
    if reconciled:
        result['reconciled'] = reconciled
    return result


def _record(backup_dir, reports):
    """Write the new status of each snapshot in ``reports`` into the manifest."""
    stamp = naming.format_timestamp()
    with Manifest(backup_dir).update() as current:
        for report in reports:
            entry = current.get(report['file'])
            if entry is None or entry.get('status') == 'deleting':
                continue
            entry.update(status=report['status'], verified_at=stamp)
            if report['ok']:
                entry.pop('verification_error', None)
            else:
                entry['verification_error'] = report['error']
    repair_pointers(backup_dir)
