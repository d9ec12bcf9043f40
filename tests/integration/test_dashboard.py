"""Every query of the Grafana dashboard parses and returns data in a real Prometheus.

Fixture series for every metric the dashboard reads (job metrics of each subsystem, the
collector's pgBackRest/PostgreSQL/Redis metrics, node_exporter's textfile metrics, ``up``)
are written as OpenMetrics text with timestamps, turned into TSDB blocks by
``promtool tsdb create-blocks-from openmetrics``, and served by a real ``prometheus`` on
loopback. Each panel target, with Grafana's variables substituted, is queried as the panel
queries it (instant for tables and stats, range otherwise) at the end of the fixture window.
"""

from __future__ import annotations

import shutil
import tempfile
import time

import pytest

from helpers.monitoring import (Prometheus, dashboard, dashboard_targets, openmetrics,
                                substitute_grafana_variables, tsdb_blocks)

STEP = 60
WINDOW = 3 * 3600


def job_series(kind, target, instance, size=True):
    base = {'instance': instance, 'job': 'node', 'kind': kind, 'target': target}
    series = [
        ('codeb_backup_last_success_timestamp_seconds', base, lambda t: t - 600),
        ('codeb_backup_last_attempt_timestamp_seconds', base, lambda t: t - 600),
        ('codeb_backup_last_status', base, lambda t: 1),
        ('codeb_backup_last_duration_seconds', base, lambda t: 42.5),
    ]
    if size:
        series.append(('codeb_backup_last_size_bytes', base, lambda t: 10485760 + (t % 3600)))
    return series


def fixture_series():
    """(family, type, sample name, labels, value(t)) of every fixture series."""
    db, bk = 'db1:9100', 'bk1:9100'
    out = []
    for kind, target, instance in [
            ('pg_snapshot', 'app', db), ('pg_snapshot_verify', 'app', db), ('pg_snapshot_prune', 'app', db),
            ('pgbackrest_full', 'codeb', bk), ('pgbackrest_diff', 'codeb', bk), ('pgbackrest_incr', 'codeb', bk),
            ('redis_rdb', '6379', db), ('redis_aof', '6379', db), ('redis_ship', '6379', bk),
            ('env', 'worb_production', db), ('bluegreen_rollback', 'worb', db), ('traffic_switch', 'worb', db),
            ('drill_pgbackrest', 'codeb', bk), ('drill_redis', '6379', bk)]:
        out += [(name, 'gauge', name, labels, fn) for name, labels, fn in job_series(kind, target, instance)]
    drill = {'instance': bk, 'job': 'node', 'kind': 'drill_pgbackrest', 'target': 'codeb'}
    out += [('codeb_backup_drill_checks_failed', 'gauge', 'codeb_backup_drill_checks_failed', drill, lambda t: 0),
            ('codeb_backup_drill_recovery_point_lag_seconds', 'gauge',
             'codeb_backup_drill_recovery_point_lag_seconds', drill, lambda t: 30)]
    stanza = {'instance': bk, 'job': 'node', 'stanza': 'codeb'}
    for name in ('stanza_status', 'repo_status', 'check_status'):
        out.append(('codeb_backup_pgbackrest_' + name, 'gauge', 'codeb_backup_pgbackrest_' + name, stanza, lambda t: 0))
    out.append(('codeb_backup_pgbackrest_repo_size_bytes', 'gauge', 'codeb_backup_pgbackrest_repo_size_bytes',
                stanza, lambda t: 5e8 + t % 1000))
    for backup_type in ('full', 'diff', 'incr'):
        labels = dict(stanza, backup_type=backup_type)
        for name, fn in (('last_backup_timestamp_seconds', lambda t: t - 3600),
                         ('backup_size_bytes', lambda t: 2e8), ('backup_repo_size_bytes', lambda t: 5e7)):
            out.append(('codeb_backup_pgbackrest_' + name, 'gauge', 'codeb_backup_pgbackrest_' + name, labels, fn))
    cluster = {'instance': db, 'job': 'node', 'cluster': '15/main'}
    standby = {'instance': bk, 'job': 'node', 'cluster': '15/standby'}
    out += [
        ('codeb_backup_pg_archiver_archived', 'counter', 'codeb_backup_pg_archiver_archived_total', cluster,
         lambda t: (t // 60) % 100000),
        ('codeb_backup_pg_archiver_failed', 'counter', 'codeb_backup_pg_archiver_failed_total', cluster,
         lambda t: (t // 600) % 1000),
        ('codeb_backup_pg_archiver_last_archived_timestamp_seconds', 'gauge',
         'codeb_backup_pg_archiver_last_archived_timestamp_seconds', cluster, lambda t: t - 30),
        ('codeb_backup_pg_archiver_ready_files', 'gauge', 'codeb_backup_pg_archiver_ready_files', cluster,
         lambda t: (t // 60) % 3),
        ('codeb_backup_pg_wal_position_bytes', 'gauge', 'codeb_backup_pg_wal_position_bytes', cluster,
         lambda t: (t - 1700000000) * 4096),
        ('codeb_backup_pg_wal_receiver_streaming', 'gauge', 'codeb_backup_pg_wal_receiver_streaming', standby,
         lambda t: 1),
    ]
    app = dict(cluster, application_name='standby')
    out += [('codeb_backup_pg_replication_lag_bytes', 'gauge', 'codeb_backup_pg_replication_lag_bytes', app,
             lambda t: 8192),
            ('codeb_backup_pg_replication_lag_seconds', 'gauge', 'codeb_backup_pg_replication_lag_seconds', app,
             lambda t: 0.2)]
    redis = {'instance': db, 'job': 'node', 'redis': '6379'}
    for name, fn in (('redis_up', lambda t: 1), ('redis_aof_enabled', lambda t: 1),
                     ('redis_rdb_last_bgsave_status', lambda t: 1), ('redis_aof_last_write_status', lambda t: 1),
                     ('redis_aof_last_bgrewrite_status', lambda t: 1),
                     ('redis_rdb_changes_since_last_save', lambda t: t % 500),
                     ('redis_rdb_last_save_timestamp_seconds', lambda t: t - t % 3600)):
        out.append(('codeb_backup_' + name, 'gauge', 'codeb_backup_' + name, redis, fn))
    for source, instance in (('postgres', db), ('redis', db), ('pgbackrest', bk)):
        labels = {'instance': instance, 'job': 'node', 'source': source}
        out += [('codeb_backup_collector_source_up', 'gauge', 'codeb_backup_collector_source_up', labels, lambda t: 1),
                ('codeb_backup_collector_duration_seconds', 'gauge', 'codeb_backup_collector_duration_seconds',
                 labels, lambda t: 0.8)]
        out.append(('node_textfile_mtime_seconds', 'gauge', 'node_textfile_mtime_seconds',
                    {'instance': instance, 'job': 'node', 'file': 'codeb_backup_collector_%s.prom' % source},
                    lambda t: t - 20))
    for instance in (db, bk):
        out.append(('node_textfile_scrape_error', 'gauge', 'node_textfile_scrape_error',
                    {'instance': instance, 'job': 'node'}, lambda t: 0))
        out.append(('up', 'gauge', 'up', {'instance': instance, 'job': 'node'}, lambda t: 1))
    out.append(('up', 'gauge', 'up', {'instance': 'localhost:9090', 'job': 'prometheus'}, lambda t: 1))
    return out


@pytest.fixture(scope='module')
def prometheus():
    base = tempfile.mkdtemp(prefix='codeb-test-prometheus-')
    # Ends a few minutes ago: blocks in the past, as a real TSDB holds them.
    end = int(time.time()) // STEP * STEP - 5 * STEP
    start = end - WINDOW
    server = Prometheus(base, tsdb_blocks(base, openmetrics(fixture_series(), start, end, STEP)))
    server.start()
    try:
        yield server, end
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


TARGETS = dashboard_targets()


def test_dashboard_shape():
    board = dashboard()
    assert 36 <= board['schemaVersion'] <= 41
    rows = [p['title'] for p in board['panels'] if p['type'] == 'row']
    for wanted in ('PostgreSQL snapshots', 'pgBackRest and WAL archiving', 'Redis', 'ENV files',
                   'Blue-green', 'Restore drills'):
        assert wanted in rows
    ids = [p['id'] for p in board['panels']]
    assert len(ids) == len(set(ids))
    for title, target in TARGETS:
        assert target['datasource'] == {'type': 'prometheus', 'uid': '${datasource}'}, title
    assert len(TARGETS) >= 30


@pytest.mark.parametrize('title,target', TARGETS, ids=['%s/%s' % (t, x['refId']) for t, x in TARGETS])
def test_panel_query_returns_data(prometheus, title, target):
    server, end = prometheus
    expr = substitute_grafana_variables(target['expr'])
    assert '$' not in expr, 'a Grafana variable the test does not know: %s' % expr
    if target.get('instant'):
        answer = server.api('query', query=expr, time=end)
    else:
        answer = server.api('query_range', query=expr, start=end - 3600, end=end, step=STEP)
    assert answer.get('status') == 'success', '%s: %s -> %s' % (title, expr, answer)
    assert answer['data']['result'], '%s: %s returned no data' % (title, expr)


def test_a_query_of_a_missing_metric_is_caught(prometheus):
    """The check can fail: a metric the fixtures (and the collector) do not have is empty."""
    server, end = prometheus
    answer = server.api('query', query='codeb_backup_no_such_metric', time=end)
    assert answer['status'] == 'success' and answer['data']['result'] == []
    answer = server.api('query', query='rate(codeb_backup_last_status[', time=end)
    assert answer['status'] == 'error'
