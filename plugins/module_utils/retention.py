# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention planning that never deletes the last good backups.

Age-only retention (a cron ``find -mtime +7 -delete``) deletes every backup once backups
silently stop for a week. Here the newest ``keep_min`` good entries are always kept,
whatever their age.
"""

from __future__ import annotations

import datetime

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.naming import parse_timestamp


def is_good(entry):
    return entry.get('status', 'ok') == 'ok'


def plan_retention(entries, now, max_age=None, keep_min=1, max_count=None):
    """Split manifest ``entries`` into ``(keep, delete)`` lists, each newest first.

    - the newest ``keep_min`` good entries are always kept;
    - any other entry is deleted when older than ``max_age`` (a timedelta), or when more
      than ``max_count`` newer entries exist (``max_count=1`` keeps only the latest);
    - with neither limit, nothing is deleted.
    Each deleted entry gets a ``reason`` in the returned copy.
    """
    if keep_min is None or int(keep_min) < 1:
        raise BackupError('keep_min must be at least 1 so the last good backup is never deleted; '
                          'got %r' % (keep_min,), param='keep_min')
    if max_count is not None and int(max_count) < 1:
        raise BackupError('max_count must be at least 1; got %r' % (max_count,), param='max_count')
    ordered = sorted(entries, key=lambda e: (e['time'], e.get('file', '')), reverse=True)
    protected = set()
    for entry in ordered:
        if len(protected) >= keep_min:
            break
        if is_good(entry):
            protected.add(id(entry))
    keep, delete = [], []
    for position, entry in enumerate(ordered):
        reason = None
        if id(entry) not in protected:
            age = now - parse_timestamp('time', entry['time'])
            if max_age is not None and age > max_age:
                reason = 'older than %s' % _human(max_age)
            elif max_count is not None and position >= max_count:
                reason = 'more than %d newer backups exist' % max_count
        if reason:
            delete.append(dict(entry, reason=reason))
        else:
            keep.append(entry)
    return keep, delete


def _human(delta):
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0:
        return '%d days' % (seconds // 86400)
    if seconds % 3600 == 0:
        return '%d hours' % (seconds // 3600)
    return str(datetime.timedelta(seconds=seconds))
