# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""AOF snapshots: Redis 7 keeps a multi-part AOF (``appendonlydir/`` with
``appendonly.aof.manifest``). Automatic rewrites are paused (``auto-aof-rewrite-percentage
0``, restored afterwards even on failure, and by the next run if this one is killed), the
manifest and exactly the files it names are copied as one set, the set is checked with
``redis-check-aof`` and (by default) loaded into a scratch ``redis-server`` to count its
keys, then stored as one tar file ``appendonly-{YYYY-MM-DDTHH:MM:SS}.aof.tar``."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tarfile
import tempfile
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable, naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError, BackupError
from ansible_collections.codeb.backup.plugins.module_utils.redis.options import (
    AOF_TAR_DIR, DEFAULT_TIMEOUT, REWRITE_RECORD,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.connection import (
    wait_for, count_keys, rewrite_percentage, run_id, redis,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.checks import (
    check_aof, read_aof_manifest,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.scratch import (
    scratch_server, read_record, remove_record,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.store import artifact_name


def restore_rewrite_setting(client, backup_dir):
    """Under the job's lock: if a killed AOF snapshot left ``auto-aof-rewrite-percentage``
    at 0, put back the original value it recorded, then drop the record. Returns
    ``dict(restored=VALUE)`` / ``dict(dropped=reason)`` or None (no record)."""
    record_path = os.path.join(backup_dir, REWRITE_RECORD)
    record = read_record(record_path)
    if record is None:
        return None
    if not re.match(r'\A\d+\Z', str(record.get('original', ''))):
        remove_record(record_path)
        return dict(dropped='unreadable record %s' % record_path)
    original = str(record['original'])
    if record.get('run_id') and record['run_id'] != run_id(client):
        # Redis restarted since: it read its setting from its config file again
        remove_record(record_path)
        return dict(dropped='Redis restarted since the record was written')
    if rewrite_percentage(client) == '0' and original != '0':
        try:
            client.config_set('auto-aof-rewrite-percentage', original)
        except redis.exceptions.RedisError as exc:
            raise BackupError('could not put auto-aof-rewrite-percentage back to %s on %s (%s), '
                              'which a killed snapshot left at 0: set it by hand'
                              % (original, client.codeb_where, exc))
        remove_record(record_path)
        return dict(restored=original)
    remove_record(record_path)
    return dict(dropped='the live value is not 0')


@contextlib.contextmanager
def rewrites_paused(client, backup_dir):
    """Pause automatic AOF rewrites for the block. The original value is recorded durably
    in ``backup_dir`` *before* it is changed, so a run killed inside the block leaves the
    next run (``restore_rewrite_setting``) what to put back; the record goes once the value
    is back."""
    record_path = os.path.join(backup_dir, REWRITE_RECORD)
    original = rewrite_percentage(client)
    durable.atomic_write_json(record_path, dict(original=original, run_id=run_id(client),
                                                where=client.codeb_where,
                                                time=naming.format_timestamp()))
    try:
        client.config_set('auto-aof-rewrite-percentage', 0)
        yield original
    finally:
        try:
            client.config_set('auto-aof-rewrite-percentage', original)
        except redis.exceptions.RedisError as exc:
            raise BackupError('could not restore auto-aof-rewrite-percentage to %s on %s '
                              '(%s): set it by hand' % (original, client.codeb_where, exc))
        remove_record(record_path)


def snapshot_aof(client, layout, backup_dir, stamp, timeout=DEFAULT_TIMEOUT, verify_load=True):
    """Copy the multi-part AOF as one consistent set; return the manifest entry."""
    began = time.monotonic()
    aof_dir = os.path.join(layout['dir'], layout['appenddirname'])
    manifest_name = layout['appendfilename'] + '.manifest'
    staging = tempfile.mkdtemp(prefix=durable.TEMP_PREFIX + 'aof-', dir=backup_dir)
    note = None
    try:
        with rewrites_paused(client, backup_dir):
            wait_for(client, lambda i: not int(i['aof_rewrite_in_progress'])
                     and not int(i['aof_rewrite_scheduled']), timeout, 'the AOF rewrite to finish')
            names = _copy_aof_set(aof_dir, manifest_name, staging)
        try:
            note = check_aof(os.path.join(staging, manifest_name), fix_truncated_tail=True,
                             name='the copy of the live AOF')
        except ArtifactError as exc:
            # the copy, not a stored snapshot, is bad: the run fails, nothing is marked
            raise BackupError(exc.msg, **exc.details)
        keys = None
        if verify_load:
            with scratch_server(os.path.dirname(staging), True, timeout,
                                appenddirname=os.path.basename(staging),
                                appendfilename=layout['appendfilename'],
                                state_dir=backup_dir) as scratch:
                keys = count_keys(scratch)
            # the scratch server may have created an empty INCR file; keep the set as copied
            names_now = read_aof_manifest(os.path.join(staging, manifest_name))[1]
            for extra in set(os.listdir(staging)) - set(names_now) - {manifest_name}:
                os.unlink(os.path.join(staging, extra))
            names = names_now
        final = os.path.join(backup_dir, artifact_name('aof', stamp))
        with durable.atomic_path(final) as temp:
            with tarfile.open(temp, 'w') as tar:
                for name in [manifest_name] + names:
                    tar.add(os.path.join(staging, name), arcname='%s/%s' % (AOF_TAR_DIR, name),
                            recursive=False)
            sha, size = durable.sha256_file(temp), os.path.getsize(temp)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    entry = dict(file=os.path.basename(final), kind='aof', time=stamp, sha256=sha,
                 size_bytes=size, keys=keys, files=names, status='ok',
                 appendfilename=layout['appendfilename'],
                 duration_seconds=round(time.monotonic() - began, 3),
                 redis_version=layout.get('redis_version'))
    if note:
        entry['note'] = note
    return entry


def _copy_aof_set(aof_dir, manifest_name, staging, attempts=5):
    """Copy the manifest and the files it names; retry if a rewrite swapped the set."""
    manifest_path = os.path.join(aof_dir, manifest_name)
    for _attempt in range(attempts):
        try:
            data, names = read_aof_manifest(manifest_path)
        except FileNotFoundError:
            raise BackupError('no AOF manifest at %s: is appendonly on and this Redis 7?'
                              % manifest_path, param='formats')
        try:
            for name in names:
                shutil.copyfile(os.path.join(aof_dir, name), os.path.join(staging, name))
        except FileNotFoundError:
            _clear(staging)
            continue  # a rewrite removed a file of the old set: start over
        again = read_aof_manifest(manifest_path)[0]
        if again == data:
            with open(os.path.join(staging, manifest_name), 'wb') as handle:
                handle.write(data)
            return names
        _clear(staging)
    raise BackupError('the AOF set in %s kept changing while it was copied (%d attempts); is '
                      'someone running BGREWRITEAOF in a loop?' % (aof_dir, attempts))


def _clear(directory):
    for name in os.listdir(directory):
        durable.discard(os.path.join(directory, name))
