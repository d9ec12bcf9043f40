"""The collector's parsing: a real ``pgbackrest info --output=json`` (captured from
pgBackRest 2.45 after a full, incr, diff and incr backup of a real cluster), the backup
type semantics, WAL names as positions, Redis INFO, and the exposition text."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis._parsers.helpers import parse_info

from ansible_collections.codeb.backup.plugins.module_utils.monitor import (
    collect, pgbackrest_facts, postgres_facts, redis_facts)

HERE = os.path.dirname(os.path.abspath(__file__))


def _info():
    with open(os.path.join(HERE, 'pgbackrest_info.json')) as handle:
        return json.load(handle)[0]


def _by_key(samples):
    return {(name, tuple(sorted(labels.items()))): value for name, labels, value in samples}


def _get(samples, name, **labels):
    return _by_key(samples)[(name, tuple(sorted(labels.items())))]


def stop(backup):
    return backup['timestamp']['stop']


def test_backup_types_follow_the_exporters_since_last_completion_meaning():
    entry = _info()
    full, incr1, diff, incr2 = entry['backup']
    assert [b['type'] for b in entry['backup']] == ['full', 'incr', 'diff', 'incr']
    samples = pgbackrest_facts.stanza_samples(entry, repo_size=1234)
    # full: the newest full; diff: newest full or diff; incr: newest of any type
    assert _get(samples, 'pgbackrest_last_backup_timestamp_seconds', stanza='main',
                backup_type='full') == stop(full)
    assert _get(samples, 'pgbackrest_last_backup_timestamp_seconds', stanza='main',
                backup_type='diff') == stop(diff)
    assert _get(samples, 'pgbackrest_last_backup_timestamp_seconds', stanza='main',
                backup_type='incr') == stop(incr2)
    assert stop(incr2) > stop(diff) > stop(incr1) > stop(full)
    # sizes and duration: the newest backup of exactly the type
    assert _get(samples, 'pgbackrest_backup_size_bytes', stanza='main',
                backup_type='incr') == incr2['info']['size']
    assert _get(samples, 'pgbackrest_backup_repo_size_bytes', stanza='main',
                backup_type='diff') == diff['info']['repository']['size']
    assert _get(samples, 'pgbackrest_backup_duration_seconds', stanza='main', backup_type='full') \
        == full['timestamp']['stop'] - full['timestamp']['start']
    counts = [_get(samples, 'pgbackrest_backups', stanza='main', backup_type=t)
              for t in ('full', 'diff', 'incr')]
    assert counts == [1, 1, 2]
    assert _get(samples, 'pgbackrest_stanza_status', stanza='main') == 0
    assert _get(samples, 'pgbackrest_repo_status', stanza='main') == 0
    assert _get(samples, 'pgbackrest_wal_archive_status', stanza='main',
                wal_min='000000010000000000000001', wal_max='000000010000000000000009') == 1
    assert _get(samples, 'pgbackrest_wal_max_position_bytes', stanza='main') == 9 * 16 * 1024 * 1024
    assert _get(samples, 'pgbackrest_repo_size_bytes', stanza='main') == 1234


def test_only_a_full_backup_satisfies_every_type_and_no_backup_gives_no_timestamp():
    entry = _info()
    entry['backup'] = entry['backup'][:1]
    samples = _by_key(pgbackrest_facts.stanza_samples(entry))
    stops = [samples[('pgbackrest_last_backup_timestamp_seconds',
                      (('backup_type', t), ('stanza', 'main')))] for t in ('full', 'diff', 'incr')]
    assert len(set(stops)) == 1
    assert ('pgbackrest_backup_size_bytes', (('backup_type', 'diff'), ('stanza', 'main'))) not in samples
    entry['backup'] = []
    names = {name for name, _labels, _value in pgbackrest_facts.stanza_samples(entry)}
    assert 'pgbackrest_last_backup_timestamp_seconds' not in names
    assert 'pgbackrest_repo_size_bytes' not in names  # not measured, not invented


def test_a_broken_repository_is_the_worst_code_of_its_repos():
    entry = _info()
    entry['repo'] = [dict(key=1, status=dict(code=0)), dict(key=2, status=dict(code=99))]
    entry['status'] = dict(code=4, message='different across repos')
    samples = pgbackrest_facts.stanza_samples(entry)
    assert _get(samples, 'pgbackrest_repo_status', stanza='main') == 99
    assert _get(samples, 'pgbackrest_stanza_status', stanza='main') == 4


@pytest.mark.parametrize('name, position', [
    ('000000010000000000000001', 0x01000000),
    ('0000000100000000000000FF', 0xFF000000),
    ('000000020000000100000000', 0x100000000),
    ('0000000A0000002A0000003B', (0x2A << 32) + 0x3B * 16 * 1024 * 1024),
])
def test_wal_segment_name_is_its_start_lsn_in_bytes(name, position):
    assert pgbackrest_facts.wal_segment_position(name) == position


@pytest.mark.parametrize('name', ['00000001000000000000001', '00000001000000000000000G',
                                  '000000010000000000000001.partial', None])
def test_a_wal_name_that_is_not_a_segment_is_refused(name):
    with pytest.raises(ValueError):
        pgbackrest_facts.wal_segment_position(name)


INFO_PERSISTENCE = (
    '# Persistence\r\nloading:0\r\nasync_loading:0\r\ncurrent_cow_peak:0\r\n'
    'rdb_changes_since_last_save:17\r\nrdb_bgsave_in_progress:0\r\n'
    'rdb_last_save_time:1796185000\r\nrdb_last_bgsave_status:err\r\n'
    'rdb_last_bgsave_time_sec:0\r\naof_enabled:1\r\naof_rewrite_in_progress:0\r\n'
    'aof_rewrite_scheduled:0\r\naof_last_rewrite_time_sec:0\r\n'
    'aof_last_bgrewrite_status:ok\r\naof_last_write_status:ok\r\n')


def test_redis_info_persistence_as_redis_py_parses_it():
    samples = redis_facts.info_samples(parse_info(INFO_PERSISTENCE), '0', '6379', expect_aof=True)
    assert _get(samples, 'redis_rdb_last_bgsave_status', redis='6379') == 0
    assert _get(samples, 'redis_aof_last_write_status', redis='6379') == 1
    assert _get(samples, 'redis_aof_last_bgrewrite_status', redis='6379') == 1
    assert _get(samples, 'redis_aof_enabled', redis='6379') == 1
    assert _get(samples, 'redis_aof_expected', redis='6379') == 1
    assert _get(samples, 'redis_rdb_changes_since_last_save', redis='6379') == 17
    assert _get(samples, 'redis_rdb_last_save_timestamp_seconds', redis='6379') == 1796185000
    assert _get(samples, 'redis_aof_rewrite_percentage', redis='6379') == 0


def test_postgres_facts_archiver_only_with_archive_mode_and_one_series_per_standby():
    facts = dict(in_recovery=False, archive_mode='on', wal_position=123, archived_count=5,
                 failed_count=2, last_archived=1796185000.5, last_failed=None, ready_files=3,
                 replication=[dict(application_name='s1', state='catchup', lag_bytes=9,
                                   lag_seconds=None),
                              dict(application_name='s1', state='streaming', lag_bytes=4,
                                   lag_seconds=0.25)],
                 wal_receiver=None)
    samples = postgres_facts.fact_samples(facts, '15/main')
    assert _get(samples, 'pg_archiver_failed_total', cluster='15/main') == 2
    assert _get(samples, 'pg_archiver_ready_files', cluster='15/main') == 3
    names = [name for name, _labels, _value in samples]
    assert 'pg_archiver_last_failed_timestamp_seconds' not in names
    assert 'pg_wal_receiver_streaming' not in names  # a primary has no receiver
    assert names.count('pg_replication_streaming') == 1
    assert _get(samples, 'pg_replication_streaming', cluster='15/main', application_name='s1') == 1
    assert _get(samples, 'pg_replication_lag_seconds', cluster='15/main', application_name='s1') == 0.25
    standby = postgres_facts.fact_samples(dict(facts, archive_mode='off', in_recovery=True,
                                               replication=[], wal_receiver='waiting'), '15/main')
    names = [name for name, _labels, _value in standby]
    assert not [n for n in names if n.startswith('pg_archiver')]
    assert _get(standby, 'pg_archive_mode', cluster='15/main') == 0
    assert _get(standby, 'pg_wal_receiver_streaming', cluster='15/main') == 0


def test_exposition_is_what_promtool_accepts(tmp_path):
    samples = (pgbackrest_facts.stanza_samples(_info(), 1) +
               redis_facts.info_samples(parse_info(INFO_PERSISTENCE), '100', 'a"b\\c') +
               postgres_facts.fact_samples(dict(archive_mode='on', archived_count=1), '15/main'))
    text = collect.exposition(samples).decode()
    assert 'codeb_backup_pg_archiver_archived_total{cluster="15/main"} 1.0' in text
    families = list(text_string_to_metric_families(text))
    assert [f.type for f in families if f.name == 'codeb_backup_pg_archiver_archived'] == ['counter']
    parsed = {s.name for family in families for s in family.samples}
    assert 'codeb_backup_redis_aof_enabled' in parsed
    proc = subprocess.run(['promtool', 'check', 'metrics'], input=text, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
