# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Job outcome metrics for node_exporter's textfile collector.

One ``*.prom`` file per (kind, target), written atomically. A failed run updates the
attempt time and status but keeps the previous success timestamp, so
``BackupFailed`` fires on the age of the last *success*.
"""

from __future__ import annotations

import os
import re
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable

DEFAULT_TEXTFILE_DIR = '/var/lib/prometheus/node-exporter'
PREFIX = 'codeb_backup_'
_SUCCESS_RE = re.compile(r'^codeb_backup_last_success_timestamp_seconds\{[^}]*\}\s+(\S+)\s*$', re.M)

HELP = {
    'last_success_timestamp_seconds': 'Unix time of the last successful run.',
    'last_attempt_timestamp_seconds': 'Unix time of the last run, successful or not.',
    'last_status': '1 if the last run succeeded, 0 if it failed.',
    'last_duration_seconds': 'Duration of the last run in seconds.',
    'last_size_bytes': 'Size in bytes of the artifact the last successful run wrote.',
}


def metrics_path(textfile_dir, kind, target):
    safe = re.sub(r'[^A-Za-z0-9_.-]', '_', '%s_%s' % (kind, target))
    return os.path.join(textfile_dir, '%s%s.prom' % (PREFIX, safe))


def _escape(value):
    return str(value).replace('\\', '\\\\').replace('\n', '\\n').replace('"', '\\"')


def write_job_metrics(kind, target, ok, duration, size=None, textfile_dir=DEFAULT_TEXTFILE_DIR,
                      now=None):
    """Write the outcome of one job run; return the file written (None if disabled)."""
    if not textfile_dir:
        return None
    now = time.time() if now is None else now
    durable.ensure_dir(textfile_dir, mode=0o755)
    path = metrics_path(textfile_dir, kind, target)
    previous_success = None
    try:
        with open(path) as handle:
            match = _SUCCESS_RE.search(handle.read())
            previous_success = float(match.group(1)) if match else None
    except (OSError, ValueError):
        previous_success = None
    values = {
        'last_attempt_timestamp_seconds': now,
        'last_status': 1 if ok else 0,
        'last_duration_seconds': round(float(duration), 3),
    }
    if ok:
        values['last_success_timestamp_seconds'] = now
        if size is not None:
            values['last_size_bytes'] = int(size)
    elif previous_success is not None:
        values['last_success_timestamp_seconds'] = previous_success
    labels = 'kind="%s",target="%s"' % (_escape(kind), _escape(target))
    lines = []
    for name in sorted(values):
        lines.append('# HELP %s%s %s' % (PREFIX, name, HELP[name]))
        lines.append('# TYPE %s%s gauge' % (PREFIX, name))
        lines.append('%s%s{%s} %s' % (PREFIX, name, labels, _number(values[name])))
    durable.atomic_write_bytes(path, ('\n'.join(lines) + '\n').encode(), mode=0o644)
    return path


def _number(value):
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    return str(int(value))
