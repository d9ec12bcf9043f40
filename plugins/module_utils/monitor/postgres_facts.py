# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL facts for the alerts: WAL archiving (pg_stat_archiver and the ``.ready``
backlog in pg_ls_archive_statusdir()), the WAL position, and replication on both ends
(pg_stat_replication on a primary, pg_stat_wal_receiver on a standby).

One statement through the collection's one psql layer (``postgres.connection``) returns
every fact as one JSON document, so the numbers come from one moment. The role needs
``pg_monitor`` (or superuser) for pg_ls_archive_statusdir() and the lag columns.
"""

from __future__ import annotations

import json

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.postgres.connection import Connection

SOURCE = 'postgres'
DEFAULT_CLUSTER = '15/main'
# archive_mode values with which the archiver runs (``always`` also on a standby)
ARCHIVING = ('on', 'always')

# WAL position: the write position on a primary, the replay position on a standby. CASE
# evaluates only the branch it takes (pg_current_wal_lsn() fails during recovery).
_POSITION = ("CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
             "ELSE pg_current_wal_lsn() END")
QUERY = """
SELECT json_build_object(
  'in_recovery', pg_is_in_recovery(),
  'archive_mode', current_setting('archive_mode'),
  'wal_position', pg_wal_lsn_diff(%(pos)s, '0/0'),
  'archived_count', a.archived_count,
  'failed_count', a.failed_count,
  'last_archived', extract(epoch FROM a.last_archived_time),
  'last_failed', extract(epoch FROM a.last_failed_time),
  'ready_files', (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%%.ready'),
  'replication', (SELECT coalesce(json_agg(json_build_object(
      'application_name', r.application_name, 'state', r.state,
      'lag_bytes', pg_wal_lsn_diff(%(pos)s, r.replay_lsn),
      'lag_seconds', extract(epoch FROM r.replay_lag)) ORDER BY r.pid), '[]'::json)
    FROM pg_stat_replication r),
  'wal_receiver', (SELECT status FROM pg_stat_wal_receiver LIMIT 1)
) FROM pg_stat_archiver a
""" % dict(pos=_POSITION)

METRICS = {
    'pg_up': 'gauge:1 if the collector could query the cluster.',
    'pg_in_recovery': 'gauge:1 on a standby (pg_is_in_recovery()).',
    'pg_archive_mode': 'gauge:1 if archive_mode is on or always.',
    'pg_archiver_archived_total': 'counter:WAL files archived (pg_stat_archiver.archived_count).',
    'pg_archiver_failed_total': 'counter:Failed WAL archive attempts (pg_stat_archiver.failed_count).',
    'pg_archiver_last_archived_timestamp_seconds': 'gauge:Unix time of the last archived WAL file.',
    'pg_archiver_last_failed_timestamp_seconds': 'gauge:Unix time of the last failed archive attempt.',
    'pg_archiver_ready_files': 'gauge:WAL files waiting to be archived (.ready in archive_status).',
    'pg_wal_position_bytes': 'gauge:Current WAL write position in bytes (replay position on a standby).',
    'pg_replication_streaming': 'gauge:1 if the standby connection is in state streaming.',
    'pg_replication_lag_bytes': 'gauge:Bytes the standby has not replayed yet.',
    'pg_replication_lag_seconds': 'gauge:replay_lag of the standby in seconds (0 when idle).',
    'pg_wal_receiver_streaming': 'gauge:1 if this standby\'s WAL receiver is streaming.',
}


def fact_samples(facts, cluster):
    """The samples ``(metric, labels, value)`` of the facts QUERY returned."""
    label = dict(cluster=cluster)
    archiving = facts.get('archive_mode') in ARCHIVING
    samples = [('pg_up', label, 1),
               ('pg_in_recovery', label, 1 if facts.get('in_recovery') else 0),
               ('pg_archive_mode', label, 1 if archiving else 0)]
    if facts.get('wal_position') is not None:
        samples.append(('pg_wal_position_bytes', label, int(facts['wal_position'])))
    if archiving:
        samples += [('pg_archiver_archived_total', label, int(facts.get('archived_count') or 0)),
                    ('pg_archiver_failed_total', label, int(facts.get('failed_count') or 0)),
                    ('pg_archiver_ready_files', label, int(facts.get('ready_files') or 0))]
        for key, metric in (('last_archived', 'pg_archiver_last_archived_timestamp_seconds'),
                            ('last_failed', 'pg_archiver_last_failed_timestamp_seconds')):
            if facts.get(key) is not None:
                samples.append((metric, label, float(facts[key])))
    seen = set()
    # one series per application_name: a streaming connection wins over a stale one
    rows = sorted(facts.get('replication') or [], key=lambda r: r.get('state') != 'streaming')
    for row in rows:
        name = row.get('application_name') or ''
        if name in seen:
            continue
        seen.add(name)
        labels = dict(cluster=cluster, application_name=name)
        samples += [('pg_replication_streaming', labels, 1 if row.get('state') == 'streaming' else 0),
                    ('pg_replication_lag_bytes', labels, max(0, int(row.get('lag_bytes') or 0))),
                    ('pg_replication_lag_seconds', labels, float(row.get('lag_seconds') or 0))]
    if facts.get('in_recovery'):
        samples.append(('pg_wal_receiver_streaming', label,
                        1 if facts.get('wal_receiver') == 'streaming' else 0))
    return samples


def down_samples(cluster):
    """What a failed collection still says: the cluster could not be queried."""
    return [('pg_up', dict(cluster=cluster), 0)]


def read_facts(conn_params):
    """The QUERY's JSON document, read through the collection's psql layer."""
    conn = Connection(conn_params)
    out = conn.psql(QUERY, conn.params['maintenance_db'], what='reading PostgreSQL monitoring facts')
    try:
        return json.loads(out.strip())
    except ValueError:
        raise BackupError('psql returned no JSON document for the monitoring facts: %r' % out[:200])


def collect(conn_params, cluster=DEFAULT_CLUSTER):
    return fact_samples(read_facts(conn_params), cluster)
