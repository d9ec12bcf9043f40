"""Snapshots written to a real manifest on disk, for the unit tests of the store and of
retention."""

from __future__ import annotations

import datetime
import hashlib

from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.postgres import options, store

NOW = datetime.datetime(2026, 1, 20, 3, 0, 0, tzinfo=datetime.timezone.utc)


def _params(tmp_path, **extra):
    params = dict(database='worb', backup_dir=str(tmp_path))
    params.update(extra)
    return params


def write_snapshots(tmp_path, database, ages_days, status=None, other=False):
    """Files and manifest entries for snapshots ``ages_days`` old (relative to NOW)."""
    manifest = Manifest(str(tmp_path))
    made = []
    with manifest.update() as entries:
        for age in ages_days:
            stamp = (NOW - datetime.timedelta(days=age)).strftime('%Y-%m-%dT%H:%M:%S')
            name = store.snapshot_name(database, stamp, 'zstd')
            (tmp_path / name).write_bytes(b'x' * 10)
            entries[name] = dict(file=name, time=stamp, kind=options.KIND, database=database,
                                 sha256=hashlib.sha256(b'x' * 10).hexdigest(), size_bytes=10,
                                 status=(status or {}).get(age, 'ok'))
            made.append(name)
    return made
