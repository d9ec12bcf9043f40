# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis persistence facts: ``INFO persistence`` and the live
``auto-aof-rewrite-percentage`` (a snapshot run sets it to 0 while it copies the AOF; a
killed run leaves it there until the next run puts it back, and 0 disables rewrites),
through the collection's Redis connection layer (``redis.connection``)."""

from __future__ import annotations

from ansible_collections.codeb.backup.plugins.module_utils.redis import connection

SOURCE = 'redis'

METRICS = {
    'redis_up': 'gauge:1 if the collector could query the Redis instance.',
    'redis_aof_enabled': 'gauge:1 if appendonly is on.',
    'redis_aof_expected': 'gauge:1 if this instance must run with appendonly on.',
    'redis_rdb_last_bgsave_status': 'gauge:1 if the last BGSAVE succeeded.',
    'redis_aof_last_write_status': 'gauge:1 if the last AOF write succeeded.',
    'redis_aof_last_bgrewrite_status': 'gauge:1 if the last AOF rewrite succeeded.',
    'redis_rdb_last_save_timestamp_seconds': 'gauge:Unix time of the last successful RDB save.',
    'redis_rdb_changes_since_last_save': 'gauge:Writes since the last RDB save.',
    'redis_aof_rewrite_percentage': 'gauge:Live auto-aof-rewrite-percentage (0 disables rewrites).',
}


def _ok(value):
    return 1 if str(value) == 'ok' else 0


def info_samples(info, rewrite_percentage, name, expect_aof=False):
    """The samples ``(metric, labels, value)`` of an ``INFO persistence`` dict (as redis-py
    parses it) and the live rewrite percentage."""
    label = dict(redis=name)
    return [
        ('redis_up', label, 1),
        ('redis_aof_enabled', label, int(info.get('aof_enabled', 0))),
        ('redis_aof_expected', label, 1 if expect_aof else 0),
        ('redis_rdb_last_bgsave_status', label, _ok(info.get('rdb_last_bgsave_status'))),
        ('redis_aof_last_write_status', label, _ok(info.get('aof_last_write_status'))),
        ('redis_aof_last_bgrewrite_status', label, _ok(info.get('aof_last_bgrewrite_status'))),
        ('redis_rdb_last_save_timestamp_seconds', label, int(info.get('rdb_last_save_time', 0))),
        ('redis_rdb_changes_since_last_save', label, int(info.get('rdb_changes_since_last_save', 0))),
        ('redis_aof_rewrite_percentage', label, float(rewrite_percentage)),
    ]


def down_samples(name, expect_aof=False):
    """What a failed collection still says: the instance could not be queried."""
    label = dict(redis=name)
    return [('redis_up', label, 0), ('redis_aof_expected', label, 1 if expect_aof else 0)]


def collect(conn, name, expect_aof=False):
    client = connection.connect(conn)
    try:
        return info_samples(connection.persistence_info(client),
                            connection.rewrite_percentage(client), name, expect_aof)
    finally:
        client.close()
