"""The status API's facts against a real Prometheus and real stores: the API and the
metrics agree.

Every series is written by the collection's own writers: job metrics by real jobs (a
pg_snapshot of a real PostgreSQL 15 database, a redis snapshot of a real Redis 7, env
backups) or by ``metrics.write_job_metrics`` (the restore drills, which no job writes yet,
and an older success), the collector's facts by ``collect.write_source`` over the
collector's own sample builders (a real Redis's INFO; a primary and a standby;
pgBackRest's real ``info`` JSON). Each host's textfile directory becomes a Prometheus
``instance``; the files are turned into TSDB blocks by ``promtool tsdb
create-blocks-from openmetrics`` and served by a real ``prometheus`` on loopback. Each
field is compared with what Prometheus answers to the field's own query, and with what
the store on disk holds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.codeb.backup.plugins.module_utils import metrics
from ansible_collections.codeb.backup.plugins.module_utils.env import jobs as env_jobs
from ansible_collections.codeb.backup.plugins.module_utils.env import store as env_store
from ansible_collections.codeb.backup.plugins.module_utils.monitor import (
    collect, pgbackrest_facts, postgres_facts, redis_facts)
from ansible_collections.codeb.backup.plugins.module_utils.postgres import snapshot as pg_snapshot
from ansible_collections.codeb.backup.plugins.module_utils.postgres import store as pg_store
from ansible_collections.codeb.backup.plugins.module_utils.redis import snapshot as redis_snapshot
from ansible_collections.codeb.backup.plugins.module_utils.redis import store as redis_store
from ansible_collections.codeb.backup.plugins.module_utils.status.facts import StatusFacts, human_size
from ansible_collections.codeb.backup.plugins.module_utils.status.listing import epoch_time, stamp_time
from helpers.ansible_runner import ROOT
from helpers.monitoring import Prometheus
from helpers.servers import RedisServer
from helpers.trees import file_contents

STEP = 60
WINDOW = 1800
BACKUP_HOST, DB_HOST, STANDBY_HOST = 'bk1:9100', 'db1:9100', 'db2:9100'
DATABASES = ['worb', 'worb.jobs']  # the dot: a regex matcher must not take it as "any"
STANZA = 'codeb'
PGBACKREST_INFO = os.path.join(ROOT, 'tests', 'unit', 'plugins', 'module_utils', 'monitor',
                               'pgbackrest_info.json')


def project(name='worb', **extra):
    found = dict(name=name, team='default', databases=[name], redis_instance=None,
                 env_project=name)
    found.update(extra)
    return found


WORB = project(databases=DATABASES, redis_instance='redis')


# --------------------------------------------------------------------------- the data

def _write_stores_and_metrics(base, pg_cluster):
    """Real stores under ``base`` and each host's textfile directory; returns the paths."""
    paths = dict(pg=os.path.join(base, 'db-backup', 'postgresql'),
                 redis=os.path.join(base, 'db-backup', 'redis'),
                 env=os.path.join(base, 'env-backup'),
                 hosts={h: os.path.join(base, 'textfiles', h.split(':', maxsplit=1)[0])
                        for h in (BACKUP_HOST, DB_HOST, STANDBY_HOST)})
    db_metrics, bk_metrics = paths['hosts'][DB_HOST], paths['hosts'][BACKUP_HOST]
    for host_dir in paths['hosts'].values():
        os.makedirs(host_dir)

    # PostgreSQL: real snapshots (worb twice, worb.jobs once); then worb.jobs's success is
    # recorded as two hours old, so it is the older of the two databases
    for database in DATABASES:
        pg_cluster.create_database(database)
        pg_cluster.psql('CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g', database)
    params = dict(backup_dir=paths['pg'], login_host='127.0.0.1', login_port=pg_cluster.port,
                  login_password=pg_cluster.password, metrics_dir=db_metrics)
    for database in ('worb', 'worb.jobs', 'worb'):
        pg_snapshot.snapshot(dict(params, database=database))
    metrics.write_job_metrics('pg_snapshot', 'worb.jobs', True, 1.5, size=4096,
                              textfile_dir=db_metrics, now=time.time() - 7200)
    # a later failed run of worb keeps its success time
    metrics.write_job_metrics('pg_snapshot', 'worb', False, 0.5, textfile_dir=db_metrics)
    # what an unescaped "worb.jobs" would also match: an ancient success
    metrics.write_job_metrics('pg_snapshot', 'worbXjobs', True, 1.0, size=1,
                              textfile_dir=db_metrics, now=1000000000)

    # Redis: two real snapshots (RDB and AOF each) of a real Redis 7 with AOF on
    redis_base = tempfile.mkdtemp(prefix='codeb-test-status-redis-')
    server = RedisServer(redis_base, appendonly=True)
    server.start()
    try:
        server.settle()
        client = server.client()
        client.set('k', 'v' * 1000)
        conn = dict(login_host='127.0.0.1', login_port=server.port)
        for _run in range(2):
            client.incr('runs')
            redis_snapshot.take_snapshot(conn, backup_dir=paths['redis'], instance='redis',
                                         metrics_dir=db_metrics)
        collect.write_source(db_metrics, redis_facts.SOURCE, True, 0.1,
                             redis_facts.collect(conn, 'redis', expect_aof=True), time.time())
    finally:
        server.stop()
        shutil.rmtree(redis_base, ignore_errors=True)
    # another instance, with AOF off: its INFO through the collector's own sample builder
    cache_dir = os.path.join(base, 'textfiles', 'cache1')
    os.makedirs(cache_dir)
    paths['hosts']['cache1:9100'] = cache_dir
    collect.write_source(cache_dir, redis_facts.SOURCE, True, 0.1, redis_facts.info_samples(
        {'aof_enabled': 0, 'rdb_last_bgsave_status': 'ok', 'rdb_last_save_time': 1767754800},
        100, 'cache'), time.time())

    # env: worb production (3 versions) and staging (1), other project newest of all
    for environment, contents in (('production', ('A=1\n', 'A=2\n', 'A=3\n')),
                                  ('staging', ('S=1\n',)), ):
        for content in contents:
            env_jobs.backup(paths['env'], 'worb', environment, content=content,
                            metrics_dir=db_metrics)
    env_jobs.backup(paths['env'], 'other', 'production', content='O=1\n', metrics_dir=db_metrics)

    # the PostgreSQL collector on the primary and on a standby (archive_mode=always), which
    # also has a cascading standby: only the primary's facts count
    primary = dict(in_recovery=False, archive_mode='on', wal_position=10 ** 9, archived_count=156,
                   failed_count=2, ready_files=0, last_archived=time.time() - 30,
                   replication=[dict(application_name='s1', state='streaming', lag_bytes=8192,
                                     lag_seconds=0.2),
                                dict(application_name='s2', state='catchup', lag_bytes=10 ** 8,
                                     lag_seconds=30)])
    standby = dict(in_recovery=True, archive_mode='always', wal_position=10 ** 9 - 8192,
                   archived_count=999, failed_count=0, ready_files=0, wal_receiver='streaming',
                   replication=[dict(application_name='cascade', state='streaming',
                                     lag_bytes=10 ** 7, lag_seconds=1)])
    for host, facts in ((DB_HOST, primary), (STANDBY_HOST, standby)):
        collect.write_source(paths['hosts'][host], postgres_facts.SOURCE, True, 0.1,
                             postgres_facts.fact_samples(facts, '15/main'), time.time())

    # pgBackRest on the backup host: a real `pgbackrest info` answer, as stanza codeb
    with open(PGBACKREST_INFO) as handle:
        entry = dict(json.load(handle)[0], name=STANZA)
    collect.write_source(bk_metrics, pgbackrest_facts.SOURCE, True, 0.5,
                         pgbackrest_facts.stanza_samples(entry, 10 ** 6), time.time())

    # restore drills (no job writes them yet): worb ok, worb.jobs failed after an old
    # success, the stanza ok, the cache instance ok; none for redis and env of worb
    now = time.time()
    metrics.write_job_metrics('drill_pg_snapshot', 'worb', True, 12.5, textfile_dir=bk_metrics, now=now)
    metrics.write_job_metrics('drill_pg_snapshot', 'worb.jobs', True, 11.0, textfile_dir=bk_metrics,
                              now=now - 86400)
    metrics.write_job_metrics('drill_pg_snapshot', 'worb.jobs', False, 3.25, textfile_dir=bk_metrics,
                              now=now - 60)
    # what an unescaped "worb.jobs" would also match: a drill failing for years
    metrics.write_job_metrics('drill_pg_snapshot', 'worbXjobs', False, 1.0, textfile_dir=bk_metrics,
                              now=1000000000)
    metrics.write_job_metrics('drill_pgbackrest', STANZA, True, 95.0, textfile_dir=bk_metrics, now=now)
    metrics.write_job_metrics('drill_redis', 'cache', True, 4.0, textfile_dir=bk_metrics, now=now)
    return paths


def _label_text(labels):
    def escape(value):
        return str(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')
    return ','.join('%s="%s"' % (k, escape(v)) for k, v in sorted(labels.items()))


def openmetrics(host_dirs, start, end):
    """Every textfile of every host as OpenMetrics with samples from ``start`` to ``end``,
    labelled as Prometheus labels node_exporter's (``instance``, ``job="node"``)."""
    families = {}
    for instance, directory in sorted(host_dirs.items()):
        for name in sorted(os.listdir(directory)):
            if not name.endswith('.prom'):
                continue
            with open(os.path.join(directory, name)) as handle:
                for family in text_string_to_metric_families(handle.read()):
                    members = families.setdefault((family.name, family.type), [])
                    for sample in family.samples:
                        members.append((sample.name, dict(sample.labels, instance=instance,
                                                          job='node'), sample.value))
    lines = []
    for (family, kind), members in sorted(families.items()):
        lines.append('# TYPE %s %s' % (family, kind))
        for sample_name, labels, value in members:
            for t in range(start, end + 1, STEP):
                lines.append('%s{%s} %s %d' % (sample_name, _label_text(labels), repr(float(value)), t))
    lines.append('# EOF')
    return '\n'.join(lines) + '\n'


def _prometheus(base, text):
    source = os.path.join(base, 'series.om.txt')
    with open(source, 'w') as handle:
        handle.write(text)
    data = os.path.join(base, 'data')
    os.makedirs(data, exist_ok=True)
    if text.strip() != '# EOF':
        proc = subprocess.run(['promtool', 'tsdb', 'create-blocks-from', 'openmetrics', source, data],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    server = Prometheus(base, data)
    server.start()
    return server


@pytest.fixture(scope='module')
def world(pg_cluster):
    base = tempfile.mkdtemp(prefix='codeb-test-status-facts-')
    empty_base = os.path.join(base, 'empty-prometheus')
    os.makedirs(empty_base)
    servers = []
    try:
        paths = _write_stores_and_metrics(os.path.join(base, 'opt'), pg_cluster)
        # the blocks end a few minutes ago, as a real TSDB holds them; queries evaluate there
        end = int(time.time()) // STEP * STEP - 5 * STEP
        server = _prometheus(os.path.join(base, 'opt'), openmetrics(paths['hosts'], end - WINDOW, end))
        servers.append(server)
        empty = _prometheus(empty_base, '# EOF\n')
        servers.append(empty)
        yield dict(paths=paths, server=server, empty=empty, end=end,
                   missing=os.path.join(base, 'no-store-here'))
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _config(world, server=None, **extra):
    config = dict(prometheus_url=(server or world['server']).url, prometheus_timeout=10,
                  cache_seconds=0, pg_snapshot_dir=world['paths']['pg'],
                  redis_backup_dir=world['paths']['redis'], env_root=world['paths']['env'],
                  pgbackrest_stanza=STANZA)
    config.update(extra)
    return config


def _facts(world, server=None, **extra):
    return StatusFacts(_config(world, server, **extra), clock=lambda: world['end'])


def ask(world, expr):
    """What Prometheus answers to ``expr`` at the fixture's time: ``[(labels, float)]``."""
    answer = world['server'].api('query', query=expr, time=world['end'])
    assert answer['status'] == 'success', (expr, answer)
    return [(item['metric'], float(item['value'][1])) for item in answer['data']['result']]


def one(world, expr):
    found = ask(world, expr)
    assert len(found) == 1, (expr, found)
    return found[0][1]


# --------------------------------------------------------------------------- backup_status

def test_backup_status_agrees_with_prometheus(world):
    answer = _facts(world).backup_status(WORB)
    assert set(answer) == {'postgresql', 'redis', 'env'}
    assert set(answer['postgresql']) == {'lastSnapshot', 'walArchived', 'replicationLag'}
    assert set(answer['redis']) == {'aofEnabled', 'lastRdbSave', 'aofSize'}
    assert set(answer['env']) == {'lastBackup', 'versions'}

    oldest = one(world, 'min(codeb_backup_last_success_timestamp_seconds{kind="pg_snapshot",'
                        r'target=~"worb|worb\\.jobs"})')
    assert answer['postgresql']['lastSnapshot'] == epoch_time(oldest)
    # the older database, as its job recorded it
    recorded = metrics.read_success_time(metrics.metrics_path(
        world['paths']['hosts'][DB_HOST], 'pg_snapshot', 'worb.jobs'))
    assert answer['postgresql']['lastSnapshot'] == epoch_time(recorded)
    assert answer['postgresql']['walArchived'] == 156 == int(one(
        world, 'codeb_backup_pg_archiver_archived_total{instance="%s"}' % DB_HOST))
    assert answer['postgresql']['replicationLag'] == '8192 bytes' == '%d bytes' % one(
        world, 'codeb_backup_pg_replication_lag_bytes{instance="%s",application_name="s1"}' % DB_HOST)

    assert answer['redis']['aofEnabled'] is True
    assert one(world, 'codeb_backup_redis_aof_enabled{redis="redis"}') == 1
    assert answer['redis']['lastRdbSave'] == epoch_time(one(
        world, 'codeb_backup_last_success_timestamp_seconds{kind="redis_rdb",target="redis"}'))
    aof_size = one(world, 'codeb_backup_last_size_bytes{kind="redis_aof",target="redis"}')
    assert answer['redis']['aofSize'] == human_size(aof_size)
    newest_aof = [e for e in redis_store.list_snapshots(world['paths']['redis']) if e['kind'] == 'aof'][0]
    assert aof_size == newest_aof['size_bytes']

    assert answer['env']['lastBackup'] == epoch_time(one(
        world, 'max(codeb_backup_last_success_timestamp_seconds{kind="env",target=~"worb/.+"})'))
    newest_other = one(world, 'codeb_backup_last_success_timestamp_seconds{kind="env",target="other/production"}')
    assert newest_other >= one(world, 'max(codeb_backup_last_success_timestamp_seconds{kind="env",'
                                      'target=~"worb/.+"})')
    assert answer['env']['versions'] == 4 == sum(
        len(env_store.EnvStore(world['paths']['env'], 'worb', e).entries())
        for e in ('production', 'staging'))


def test_two_databases_answer_the_older_and_one_without_a_snapshot_makes_it_unknown(world):
    facts = _facts(world)
    single = facts.backup_status(project(databases=['worb']))['postgresql']['lastSnapshot']
    both = facts.backup_status(project(databases=['worb', 'worb.jobs']))['postgresql']['lastSnapshot']
    assert single > both  # ISO 8601 UTC strings order as times
    assert single == epoch_time(one(world, 'codeb_backup_last_success_timestamp_seconds'
                                           '{kind="pg_snapshot",target="worb"}'))
    assert facts.backup_status(project(databases=['worb', 'nodb']))['postgresql']['lastSnapshot'] is None


def test_missing_series_are_null(world):
    ghost = project('ghost', redis_instance='nosuch')
    answer = _facts(world).backup_status(ghost)
    assert answer['postgresql']['lastSnapshot'] is None
    assert answer['redis'] == dict(aofEnabled=None, lastRdbSave=None, aofSize=None)
    assert answer['env'] == dict(lastBackup=None, versions=0)
    assert ask(world, 'codeb_backup_redis_aof_enabled{redis="nosuch"}') == []
    # the cluster's facts are not per project: still there
    assert answer['postgresql']['walArchived'] == 156


def test_a_project_without_redis_has_no_redis_facts(world):
    answer = _facts(world).backup_status(project(databases=DATABASES, redis_instance=None))
    assert answer['redis'] == dict(aofEnabled=None, lastRdbSave=None, aofSize=None)
    listed = _facts(world).backup_list(project(databases=DATABASES, redis_instance=None))
    assert listed['redis'] == dict(instance=None, snapshots=[])
    assert listed['drills']['redis'] is None


def test_aof_off_is_false_not_unknown(world):
    answer = _facts(world).backup_status(project('cachey', redis_instance='cache'))['redis']
    assert answer['aofEnabled'] is False
    assert one(world, 'codeb_backup_redis_aof_enabled{redis="cache"}') == 0
    assert answer['lastRdbSave'] is None and answer['aofSize'] is None  # no job of it


def test_nothing_in_prometheus_everything_from_it_is_null(world):
    facts = _facts(world, world['empty'])
    answer = facts.backup_status(WORB)
    assert answer == dict(
        postgresql=dict(lastSnapshot=None, walArchived=None, replicationLag=None),
        redis=dict(aofEnabled=None, lastRdbSave=None, aofSize=None),
        env=dict(lastBackup=None, versions=4))
    listed = facts.backup_list(WORB)
    assert listed['drills'] == dict(pgbackrest=None, pg_snapshot=None, redis=None, env=None)
    assert listed['postgresql']['pgbackrest'] == dict(stanza=STANZA, lastFull=None, lastDiff=None,
                                                      lastIncr=None, backups=None)
    # the stores are still read
    assert listed['postgresql']['snapshots'] == _facts(world).backup_list(WORB)['postgresql']['snapshots']
    assert len(listed['postgresql']['snapshots']) == 3


# --------------------------------------------------------------------------- backup_list

def test_backup_list_agrees_with_the_stores_and_prometheus(world):
    paths = world['paths']
    before = {name: file_contents(paths[name]) for name in ('pg', 'redis', 'env')}
    answer = _facts(world).backup_list(WORB)
    assert set(answer) == {'project', 'postgresql', 'redis', 'env', 'drills'}
    assert answer['project'] == 'worb'

    snapshots = answer['postgresql']['snapshots']
    held = [s for d in DATABASES for s in pg_store.list_snapshots(paths['pg'], d)]
    assert len(snapshots) == len(held) == 3
    assert sorted((s['database'], s['file'], s['time'], s['sha256'], s['sizeBytes'], s['status'])
                  for s in snapshots) == sorted(
        (s['database'], s['file'], stamp_time(s['time']), s['sha256'], s['size_bytes'], 'ok')
        for s in held)
    assert [s['time'] for s in snapshots] == sorted((s['time'] for s in snapshots), reverse=True)
    assert all(set(s) == {'database', 'file', 'time', 'sha256', 'sizeBytes', 'status'} for s in snapshots)

    backrest = answer['postgresql']['pgbackrest']
    last = {labels['backup_type']: value for labels, value in ask(
        world, 'codeb_backup_pgbackrest_last_backup_timestamp_seconds{stanza="codeb"}')}
    assert backrest == dict(stanza=STANZA, lastFull=epoch_time(last['full']),
                            lastDiff=epoch_time(last['diff']), lastIncr=epoch_time(last['incr']),
                            backups=int(one(world, 'sum(codeb_backup_pgbackrest_backups{stanza="codeb"})')))
    assert backrest['backups'] == 4  # the captured repository: 1 full, 1 diff, 2 incr

    redis = answer['redis']
    assert redis['instance'] == 'redis'
    held = redis_store.list_snapshots(paths['redis'])
    assert len(redis['snapshots']) == len(held) == 3  # 2 RDB; retention keeps 1 AOF
    assert sorted((s['kind'], s['file'], s['time'], s['sha256'], s['sizeBytes'], s['status'])
                  for s in redis['snapshots']) == sorted(
        (e['kind'], e['file'], stamp_time(e['time']), e['sha256'], e['size_bytes'], 'ok') for e in held)
    assert [s['time'] for s in redis['snapshots']] == sorted(
        (s['time'] for s in redis['snapshots']), reverse=True)
    assert redis['snapshots'][0]['time'] > redis['snapshots'][-1]['time']

    versions = answer['env']['versions']
    logged = [(e, v) for e in ('production', 'staging')
              for v in env_store.EnvStore(paths['env'], 'worb', e).entries()]
    assert sorted((v['environment'], v['version'], v['time'], v['sha256'], v['sizeBytes'], v['trigger'])
                  for v in versions) == sorted(
        (e, v['version'], v['version'] + 'Z', v['sha256'], v['size_bytes'], v['trigger'])
        for e, v in logged)
    assert [v['time'] for v in versions] == sorted((v['time'] for v in versions), reverse=True)

    # reading changed nothing in any store
    assert {name: file_contents(paths[name]) for name in ('pg', 'redis', 'env')} == before


def _drill(world, kind, target):
    labels = '{kind="%s",target="%s"}' % (kind, target)
    return dict(status='ok' if one(world, 'codeb_backup_last_status' + labels) == 1 else 'failed',
                lastSuccess=epoch_time(one(world, 'codeb_backup_last_success_timestamp_seconds' + labels)),
                lastAttempt=epoch_time(one(world, 'codeb_backup_last_attempt_timestamp_seconds' + labels)),
                durationSeconds=one(world, 'codeb_backup_last_duration_seconds' + labels))


def test_drills_present_and_absent(world):
    drills = _facts(world).backup_list(WORB)['drills']
    # the worst of the project's databases: worb.jobs failed (its success a day old)
    assert drills['pg_snapshot'] == _drill(world, 'drill_pg_snapshot', 'worb.jobs')
    assert drills['pg_snapshot']['status'] == 'failed' and drills['pg_snapshot']['durationSeconds'] == 3.25
    assert _facts(world).backup_list(project(databases=['worb']))['drills']['pg_snapshot'] == \
        dict(_drill(world, 'drill_pg_snapshot', 'worb'), status='ok')
    assert drills['pgbackrest'] == _drill(world, 'drill_pgbackrest', STANZA)
    assert drills['pgbackrest']['status'] == 'ok'
    assert drills['redis'] is None and drills['env'] is None
    assert ask(world, 'codeb_backup_last_status{kind=~"drill_(redis|env)",target=~"redis|worb/.+"}') == []
    cachey = _facts(world).backup_list(project('cachey', redis_instance='cache'))['drills']
    assert cachey['redis'] == _drill(world, 'drill_redis', 'cache')


def test_a_project_with_no_stores_lists_nothing(world):
    answer = _facts(world).backup_list(project('ghost', redis_instance=None))
    assert answer['postgresql']['snapshots'] == [] and answer['env']['versions'] == []
    nowhere = world['missing']
    missing = _facts(world, pg_snapshot_dir=nowhere, env_root=nowhere, redis_backup_dir=nowhere)
    listed = missing.backup_list(WORB)
    assert listed['postgresql']['snapshots'] == [] and listed['redis']['snapshots'] == []
    assert listed['env']['versions'] == []
