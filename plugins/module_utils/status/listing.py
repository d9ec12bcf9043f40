# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the backup host's stores hold for a project, read-only, through each subsystem's
own store reader (so a tampered manifest or log is refused here exactly as a restore
would refuse it): PostgreSQL snapshots (``postgres.store``), Redis snapshots
(``redis.store``) and env versions (``env.store``).

A store that does not exist lists nothing. Entries a prune has marked ``deleting`` are
on their way out and are not listed: they are no longer backups anyone may restore.
Times are ISO 8601 UTC with a ``Z`` (the manifests record UTC ``YYYY-MM-DDTHH:MM:SS``).
"""

from __future__ import annotations

import datetime
import math

from ansible_collections.codeb.backup.plugins.module_utils import naming
from ansible_collections.codeb.backup.plugins.module_utils.env import store as env_store
from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error
from ansible_collections.codeb.backup.plugins.module_utils.postgres import store as pg_store
from ansible_collections.codeb.backup.plugins.module_utils.redis import store as redis_store

DELETING = pg_store.DELETING
TIME_FORMAT = '%Y-%m-%dT%H:%M:%SZ'


def stamp_time(stamp):
    """A manifest timestamp (UTC ``YYYY-MM-DDTHH:MM:SS``) in the answers' format, or None
    when it is not one."""
    return stamp + 'Z' if naming.is_timestamp(stamp) else None


def epoch_time(seconds):
    """Unix time ``seconds`` in the answers' format (whole seconds, rounded down), or None
    when it is not a known time (missing, not finite, not after the epoch)."""
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) \
            or not math.isfinite(seconds) or seconds <= 0:
        return None
    moment = datetime.datetime.fromtimestamp(math.floor(seconds), datetime.timezone.utc)
    return moment.strftime(TIME_FORMAT)


def _newest_first(items, *tie_keys):
    return sorted(items, key=lambda item: (item['time'] or '',) + tuple(item[k] for k in tie_keys),
                  reverse=True)


def pg_snapshots(backup_dir, databases):
    """The snapshots of ``databases`` in the pg_snapshot store ``backup_dir``, newest first."""
    found = []
    try:
        for database in databases:
            for snap in pg_store.list_snapshots(backup_dir, database):
                if snap['status'] == DELETING:
                    continue
                found.append(dict(database=snap['database'], file=snap['file'],
                                  time=stamp_time(snap['time']), sha256=snap['sha256'],
                                  sizeBytes=snap['size_bytes'], status=snap['status']))
    except OSError as exc:
        raise as_backup_error(exc, 'reading the PostgreSQL snapshot store %s' % backup_dir,
                              param='pg_snapshot_dir')
    return _newest_first(found, 'database', 'file')


def redis_snapshots(backup_dir):
    """The RDB and AOF snapshots in the Redis store ``backup_dir``, newest first."""
    try:
        entries = redis_store.list_snapshots(backup_dir)
    except OSError as exc:
        raise as_backup_error(exc, 'reading the Redis snapshot store %s' % backup_dir,
                              param='redis_backup_dir')
    found = [dict(kind=entry['kind'], file=entry['file'], time=stamp_time(entry['time']),
                  sha256=entry['sha256'], sizeBytes=entry['size_bytes'],
                  status=entry.get('status', 'ok'))
             for entry in entries if entry.get('status') != DELETING]
    return _newest_first(found, 'file')


def env_versions(root, project):
    """Every version of every environment of ``project`` in the env store ``root``, newest
    first."""
    found = []
    try:
        for environment in env_store.environments(root, project):
            for entry in env_store.EnvStore(root, project, environment).entries():
                found.append(dict(environment=environment, version=entry['version'],
                                  time=stamp_time(entry['version']), sha256=entry['sha256'],
                                  sizeBytes=entry['size_bytes'], trigger=entry.get('trigger')))
    except OSError as exc:
        raise as_backup_error(exc, 'reading the env store %s' % root, param='env_root')
    return _newest_first(found, 'environment')
