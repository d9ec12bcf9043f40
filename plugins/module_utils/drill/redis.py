# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Redis drill: the newest good RDB and the newest good AOF set, each checked (size,
sha256, redis-check-rdb / redis-check-aof) and loaded into a scratch ``redis-server`` on a
private unix socket; its key count must agree with the manifest (as a restore checks it)
and the sentinel key, when given, must be there. Nothing in the store changes."""

from __future__ import annotations

import contextlib
import os
import shutil
import time

from ansible_collections.codeb.backup.plugins.module_utils import naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError, BackupError
from ansible_collections.codeb.backup.plugins.module_utils.redis.checks import verify_artifact
from ansible_collections.codeb.backup.plugins.module_utils.redis.connection import count_keys
from ansible_collections.codeb.backup.plugins.module_utils.redis.options import FORMATS
from ansible_collections.codeb.backup.plugins.module_utils.redis.restore import key_count_problem
from ansible_collections.codeb.backup.plugins.module_utils.redis.scratch import scratch_server
from ansible_collections.codeb.backup.plugins.module_utils.redis.store import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.retention import is_good
from ansible_collections.codeb.backup.plugins.module_utils.drill.scratch import check_free_space

# Scratch disk a load needs, as a multiple of the snapshot's size (one copy or extract).
SPACE_FACTOR = 1
_MANIFEST_SUFFIX = '.manifest'


def targets(p):
    if not os.path.isdir(p['redis_backup_dir']):
        raise BackupError('redis_backup_dir %s does not exist: no snapshots to drill'
                          % p['redis_backup_dir'], param='redis_backup_dir')
    return [p['redis_instance']]


def label(target):
    return target


def environment(_p, _scratch):
    return contextlib.nullcontext()


def drill(p, scratch, _env, _instance, job):
    backup_dir = p['redis_backup_dir']
    entries = [e for e in Manifest(backup_dir).entries() if is_good(e)]
    newest = {}
    for entry in entries:  # oldest first: the last of each kind wins
        if entry.get('kind') in FORMATS:
            newest[entry['kind']] = entry
    if not newest:
        raise BackupError('no good RDB or AOF snapshot in redis_backup_dir %s to drill'
                          % backup_dir, param='redis_backup_dir')
    checks, failed = [], []
    for kind in FORMATS:
        if kind not in newest:
            continue
        check = _drill_one(p, scratch, newest[kind])
        checks.append(check)
        if not check['ok']:
            failed.append(dict(artifact=check['file'], error=check['error']))
    latest = max(naming.parse_timestamp('time', e['time']) for e in newest.values())
    job.gauges['drill_recovery_point_lag_seconds'] = round(
        (naming.utcnow() - latest).total_seconds(), 3)
    job.gauges['drill_checks_failed'] = len(failed)
    job.size = sum(newest[k]['size_bytes'] for k in newest)
    return dict(snapshots=checks, failed_checks=failed,
                recovered_point=naming.format_timestamp(latest))


def _drill_one(p, scratch, entry):
    began = time.monotonic()
    result = dict(file=entry['file'], format=entry['kind'], time=entry['time'], ok=False)
    check_free_space(scratch.base, entry['size_bytes'] * SPACE_FACTOR, p['scratch_reserve_mb'],
                     entry['file'])
    work = scratch.new_dir('redis-%s' % entry['kind'])
    try:
        try:
            extract = verify_artifact(p['redis_backup_dir'], entry, work_dir=work)
        except ArtifactError as exc:
            result['error'] = exc.msg
            return result
        if entry['kind'] == 'rdb':
            shutil.copyfile(os.path.join(p['redis_backup_dir'], entry['file']),
                            os.path.join(work, 'dump.rdb'))
            server = scratch_server(work, False, timeout=p['timeout'], state_dir=scratch.root)
        else:
            manifest = [n for n in os.listdir(extract) if n.endswith(_MANIFEST_SUFFIX)][0]
            server = scratch_server(work, True, timeout=p['timeout'],
                                    appenddirname=os.path.basename(extract),
                                    appendfilename=manifest[:-len(_MANIFEST_SUFFIX)],
                                    state_dir=scratch.root)
        try:
            with server as client:
                keys = count_keys(client)
                sentinel = p.get('redis_sentinel_key')
                has_sentinel = bool(client.exists(sentinel)) if sentinel else None
        except BackupError as exc:  # the server refused to load what passed the check tool
            result['error'] = 'loading %s: %s' % (entry['file'], exc.msg)
            return result
        result.update(keys=keys, expected_keys=entry.get('keys'))
        problems = [key_count_problem(entry, keys)]
        if has_sentinel is False:
            problems.append('%s lacks the sentinel key %r written before every snapshot'
                            % (entry['file'], sentinel))
        problems = [problem for problem in problems if problem]
        if problems:
            result['error'] = '; '.join(problems)
            return result
        result['ok'] = True
        if sentinel:
            result['sentinel_key'] = 'present'
        return result
    finally:
        result['seconds'] = round(time.monotonic() - began, 3)
