"""``codeb-backup collect-metrics`` against real servers: PostgreSQL 15 archiving to a real
local pgBackRest repository, and Redis 7. Every file it writes must pass
``promtool check metrics``; a source that fails is written with up 0 and the command
exits 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.codeb.backup.plugins.module_utils.postgres import pgbackrest as pb
from ansible_collections.codeb.backup.plugins.module_utils.monitor import pgbackrest_facts
from helpers.ansible_runner import ROOT
from helpers.pgbackrest import archiving_cluster
from helpers.servers import PostgresCluster, free_port, wait_for

STANZA = 'mon'
PROM = 'codeb_backup_'


@pytest.fixture(scope='module')
def cluster():
    base = tempfile.mkdtemp(prefix='codeb-test-collect-')
    server = archiving_cluster(base, STANZA)
    pb.ensure_stanza(STANZA, repo_user='postgres', config=server.config)
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


def collect(metrics_dir, *argv):
    """Run the host command as cron does; return (exit code, JSON result, {file: samples})
    after checking every file it wrote with promtool."""
    code = ('import sys; sys.path.insert(0, %r)\n'
            'from ansible_collections.codeb.backup.plugins.module_utils.cli import main\n'
            'sys.exit(main(sys.argv[1:]))' % os.path.join(ROOT, '.collections'))
    proc = subprocess.run([sys.executable, '-c', code, 'collect-metrics', '--metrics-dir',
                           str(metrics_dir)] + list(argv),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.stderr == '', proc.stderr
    result = json.loads(proc.stdout)
    files = {}
    for name in sorted(os.listdir(metrics_dir)):
        if not name.endswith('.prom'):
            continue
        path = os.path.join(metrics_dir, name)
        with open(path) as handle:
            text = handle.read()
        check = subprocess.run(['promtool', 'check', 'metrics'], input=text, capture_output=True,
                               text=True, check=False)
        assert check.returncode == 0, (name, check.stdout, check.stderr, text)
        files[name] = {(s.name[len(PROM):], tuple(sorted(s.labels.items()))): s.value
                       for family in text_string_to_metric_families(text)
                       for s in family.samples}
    return proc.returncode, result, files


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def names(samples):
    return {name for name, _labels in samples}


def _pgbackrest_args(server):
    return ['--pgbackrest-stanza', STANZA, '--pgbackrest-repo-user', 'postgres',
            '--pgbackrest-config', server.config]


def _postgres_args(server):
    return ['--postgres', '--postgres-unix-socket', server.socket_dir,
            '--postgres-port', str(server.port)]


PGBR_FILE = 'codeb_backup_collector_pgbackrest.prom'
PG_FILE = 'codeb_backup_collector_postgres.prom'
REDIS_FILE = 'codeb_backup_collector_redis.prom'


def test_pgbackrest_backups_per_type_after_real_backups(cluster, tmp_path):
    kw = dict(repo_user='postgres', config=cluster.config, metrics_dir=cluster.metrics_dir,
              lock_dir=cluster.lock_dir)
    rc, result, files = collect(tmp_path, *_pgbackrest_args(cluster))
    assert rc == 0, result
    assert list(files) == [PGBR_FILE]  # a source not asked for writes no file
    before = files[PGBR_FILE]
    assert value(before, 'collector_source_up', source='pgbackrest') == 1
    assert value(before, 'pgbackrest_backups', stanza=STANZA, backup_type='full') == 0
    # pgBackRest's own code for a stanza without a backup
    assert value(before, 'pgbackrest_stanza_status', stanza=STANZA) == 2
    assert 'pgbackrest_last_backup_timestamp_seconds' not in names(before)

    pb.backup(STANZA, 'full', **kw)
    info = pb.stanza_info(STANZA, run_as='postgres', config=cluster.config)
    full = info['backup'][-1]
    rc, result, files = collect(tmp_path, *_pgbackrest_args(cluster))
    assert rc == 0, result
    after = files[PGBR_FILE]
    assert value(after, 'pgbackrest_stanza_status', stanza=STANZA) == 0
    assert value(after, 'pgbackrest_repo_status', stanza=STANZA) == 0
    for backup_type in ('full', 'diff', 'incr'):  # a full backup satisfies every type
        assert value(after, 'pgbackrest_last_backup_timestamp_seconds', stanza=STANZA,
                     backup_type=backup_type) == full['timestamp']['stop']
    assert value(after, 'pgbackrest_backups', stanza=STANZA, backup_type='full') == 1
    assert value(after, 'pgbackrest_backup_size_bytes', stanza=STANZA, backup_type='full') \
        == full['info']['size'] > 0
    assert value(after, 'pgbackrest_repo_size_bytes', stanza=STANZA) > \
        full['info']['repository']['delta']  # the backup and the archived WAL
    wal = [labels for name, labels in after if name == 'pgbackrest_wal_archive_status']
    assert len(wal) == 1
    wal_max = dict(wal[0])['wal_max']
    assert value(after, 'pgbackrest_wal_max_position_bytes', stanza=STANZA) \
        == pgbackrest_facts.wal_segment_position(wal_max) > 0

    cluster.psql('CREATE TABLE IF NOT EXISTS grow (i int); INSERT INTO grow VALUES (1)')
    pb.backup(STANZA, 'incr', **kw)
    incr = pb.stanza_info(STANZA, run_as='postgres', config=cluster.config)['backup'][-1]
    rc, result, files = collect(tmp_path, *_pgbackrest_args(cluster))
    now = files[PGBR_FILE]
    assert value(now, 'pgbackrest_last_backup_timestamp_seconds', stanza=STANZA,
                 backup_type='incr') == incr['timestamp']['stop']
    assert value(now, 'pgbackrest_last_backup_timestamp_seconds', stanza=STANZA,
                 backup_type='diff') == full['timestamp']['stop']
    assert value(now, 'pgbackrest_backups', stanza=STANZA, backup_type='incr') == 1


def test_check_result_is_kept_by_the_runs_in_between(cluster, tmp_path):
    rc, result, files = collect(tmp_path, '--pgbackrest-check', *_pgbackrest_args(cluster))
    assert rc == 0, result
    checked = files[PGBR_FILE]
    assert value(checked, 'pgbackrest_check_status', stanza=STANZA) == 0
    stamp = value(checked, 'pgbackrest_check_timestamp_seconds', stanza=STANZA)
    assert stamp > 0
    rc, result, files = collect(tmp_path, *_pgbackrest_args(cluster))
    assert rc == 0, result
    assert value(files[PGBR_FILE], 'pgbackrest_check_status', stanza=STANZA) == 0
    assert value(files[PGBR_FILE], 'pgbackrest_check_timestamp_seconds', stanza=STANZA) == stamp
    # a stanza the repository does not have: pgBackRest's code, and check's exit code
    rc, result, files = collect(tmp_path, '--pgbackrest-check', *(
        _pgbackrest_args(cluster) + ['--pgbackrest-stanza', 'nosuch']))
    assert rc == 0, result
    assert value(files[PGBR_FILE], 'pgbackrest_stanza_status', stanza='nosuch') == 1
    assert value(files[PGBR_FILE], 'pgbackrest_check_status', stanza='nosuch') != 0


def _archiver(tmp_path, cluster):
    rc, result, files = collect(tmp_path, *_postgres_args(cluster))
    assert rc == 0, result
    return files[PG_FILE]


def test_wal_archiving_counts_and_a_broken_archive_command(cluster, tmp_path):
    first = _archiver(tmp_path, cluster)
    label = dict(cluster='15/main')
    assert value(first, 'pg_up', **label) == 1
    assert value(first, 'pg_in_recovery', **label) == 0
    assert value(first, 'pg_archive_mode', **label) == 1
    archived = value(first, 'pg_archiver_archived_total', **label)
    position = value(first, 'pg_wal_position_bytes', **label)
    assert position > 0
    assert 'pg_replication_streaming' not in names(first)  # no standby
    cluster.psql('CREATE TABLE IF NOT EXISTS grow (i int); INSERT INTO grow VALUES (2)')
    cluster.psql('SELECT pg_switch_wal()')
    state = {}

    def archived_more():
        state['s'] = _archiver(tmp_path, cluster)
        return value(state['s'], 'pg_archiver_archived_total', **label) > archived
    wait_for(archived_more, 60, 'pg_stat_archiver.archived_count to grow after pg_switch_wal')
    assert value(state['s'], 'pg_wal_position_bytes', **label) > position
    assert value(state['s'], 'pg_archiver_last_archived_timestamp_seconds', **label) > 0

    failed = value(state['s'], 'pg_archiver_failed_total', **label)
    # the helper's archive_command is in postgresql.auto.conf: RESET would remove it
    original = cluster.psql('SHOW archive_command')
    cluster.psql("ALTER SYSTEM SET archive_command = 'false'")
    cluster.psql('SELECT pg_reload_conf()')
    try:
        cluster.psql('INSERT INTO grow VALUES (3)')
        cluster.psql('SELECT pg_switch_wal()')

        def failing():
            state['s'] = _archiver(tmp_path, cluster)
            return value(state['s'], 'pg_archiver_failed_total', **label) > failed and \
                value(state['s'], 'pg_archiver_ready_files', **label) > 0
        wait_for(failing, 60, 'failed_count to grow and a .ready file while archive_command fails')
        assert value(state['s'], 'pg_archiver_last_failed_timestamp_seconds', **label) > 0
    finally:
        cluster.psql("ALTER SYSTEM SET archive_command = '%s'" % original.replace("'", "''"))
        cluster.psql('SELECT pg_reload_conf()')
    wait_for(lambda: value(_archiver(tmp_path, cluster), 'pg_archiver_ready_files', **label) == 0,
             120, 'the .ready backlog to drain after archive_command is back')


def test_without_archive_mode_no_archiver_facts(pg_cluster, tmp_path):
    rc, result, files = collect(tmp_path, '--postgres', '--postgres-unix-socket',
                                pg_cluster.socket_dir, '--postgres-port', str(pg_cluster.port),
                                '--postgres-cluster', '15/other')
    assert rc == 0, result
    samples = files[PG_FILE]
    assert value(samples, 'pg_archive_mode', cluster='15/other') == 0
    assert not [n for n in names(samples) if n.startswith('pg_archiver')]


def test_redis_persistence_facts_follow_the_server(redis_factory, tmp_path):
    server = redis_factory(appendonly=True, extra_config={'enable-protected-configs': 'yes'})
    server.settle()
    args = ['--redis', '--redis-port', str(server.port), '--redis-expect-aof']
    rc, result, files = collect(tmp_path, *args)
    assert rc == 0, result
    samples = files[REDIS_FILE]
    label = dict(redis=str(server.port))
    assert value(samples, 'redis_up', **label) == 1
    assert value(samples, 'redis_aof_enabled', **label) == 1
    assert value(samples, 'redis_aof_expected', **label) == 1
    assert value(samples, 'redis_aof_rewrite_percentage', **label) == 100
    assert value(samples, 'redis_rdb_last_bgsave_status', **label) == 1
    client = server.client()
    client.set('k', 'v')
    client.config_set('appendonly', 'no')
    # a BGSAVE into a directory that is gone fails (Redis runs as root here: no chmod)
    gone = tmp_path / 'gone'
    gone.mkdir()
    client.config_set('dir', str(gone))
    gone.rmdir()
    client.bgsave()
    wait_for(lambda: client.info('persistence')['rdb_bgsave_in_progress'] == 0, 30, 'BGSAVE to end')
    rc, result, files = collect(tmp_path, *args)
    assert rc == 0, result
    samples = files[REDIS_FILE]
    assert value(samples, 'redis_aof_enabled', **label) == 0
    assert value(samples, 'redis_rdb_last_bgsave_status', **label) == 0
    assert value(samples, 'redis_rdb_changes_since_last_save', **label) >= 1
    client.config_set('dir', server.base)


def test_a_failing_source_is_written_down_and_fails_the_run(cluster, tmp_path):
    port = free_port()  # nothing listens there
    rc, result, files = collect(tmp_path, '--redis', '--redis-port', str(port), '--redis-name',
                                'cache', *_postgres_args(cluster))
    assert rc == 1, result
    assert result['failed'] is True and result['failed_sources'] == ['redis'], result
    assert result['param'] == 'redis' and 'cannot reach Redis' in result['msg'], result
    assert result['sources']['postgres']['up'] is True
    redis = files[REDIS_FILE]
    assert value(redis, 'collector_source_up', source='redis') == 0
    assert value(redis, 'redis_up', redis='cache') == 0
    assert 'redis_aof_enabled' not in names(redis)  # no stale or invented facts
    assert value(files[PG_FILE], 'collector_source_up', source='postgres') == 1
    # a pgBackRest that cannot run fails the same way, naming its option
    rc, result, files = collect(tmp_path, '--pgbackrest-stanza', STANZA, '--pgbackrest-repo-user',
                                'postgres', '--pgbackrest-config', str(tmp_path / 'missing.conf'))
    assert rc == 1 and result['failed_sources'] == ['pgbackrest'], result
    assert value(files[PGBR_FILE], 'collector_source_up', source='pgbackrest') == 0
    assert names(files[PGBR_FILE]) == {'collector_source_up', 'collector_last_run_timestamp_seconds',
                                       'collector_duration_seconds'}


def test_nothing_asked_is_an_error(tmp_path):
    rc, result, files = collect(tmp_path)
    assert rc == 1 and 'nothing to collect' in result['msg'], result
    assert files == {}


def test_concurrent_runs_leave_whole_files(redis_factory, tmp_path):
    server = redis_factory(appendonly=False)
    code = ('import sys; sys.path.insert(0, %r)\n'
            'from ansible_collections.codeb.backup.plugins.module_utils.cli import main\n'
            'sys.exit(main(sys.argv[1:]))' % os.path.join(ROOT, '.collections'))
    argv = [sys.executable, '-c', code, 'collect-metrics', '--metrics-dir', str(tmp_path),
            '--redis', '--redis-port', str(server.port)]
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL) for _run in range(6)]
    assert [p.wait(120) for p in procs] == [0] * 6
    rc, result, files = collect(tmp_path, '--redis', '--redis-port', str(server.port))
    assert rc == 0 and list(files) == [REDIS_FILE]
    assert [n for n in os.listdir(tmp_path) if n.startswith('.tmp')] == []


@pytest.fixture
def standby(cluster):
    """A streaming standby of ``cluster`` (pg_basebackup -R) on its own port and socket."""
    base = tempfile.mkdtemp(prefix='codeb-test-standby-')
    server = PostgresCluster(base)
    subprocess.run([os.path.join(server.bin, 'pg_basebackup'), '-h', cluster.socket_dir, '-p',
                    str(cluster.port), '-U', 'postgres', '-D', server.data, '-R', '-X', 'stream',
                    '--no-sync'], user='postgres', group='postgres', extra_groups=[], check=True,
                   capture_output=True)
    with open(os.path.join(server.data, 'postgresql.auto.conf'), 'a') as handle:
        handle.write("port = %d\nunix_socket_directories = '%s'\narchive_mode = 'off'\n"
                     "primary_conninfo = 'host=%s port=%d user=postgres application_name=standby1'\n"
                     % (server.port, base, cluster.socket_dir, cluster.port))
    server.start()
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_replication_facts_on_both_ends(cluster, standby, tmp_path):
    primary_args = _postgres_args(cluster)
    standby_args = ['--postgres', '--postgres-unix-socket', standby.socket_dir,
                    '--postgres-port', str(standby.port), '--postgres-cluster', '15/standby']
    labels = dict(cluster='15/main', application_name='standby1')
    state = {}

    def streaming():
        rc, result, files = collect(tmp_path, *primary_args)
        assert rc == 0, result
        state['p'] = files[PG_FILE]
        return value(state['p'], 'pg_replication_streaming', **labels) == 1
    wait_for(streaming, 60, 'the standby to stream')
    assert value(state['p'], 'pg_replication_lag_bytes', **labels) >= 0
    assert value(state['p'], 'pg_replication_lag_seconds', **labels) >= 0
    assert 'pg_wal_receiver_streaming' not in names(state['p'])  # a primary has no receiver

    rc, result, files = collect(tmp_path, *standby_args)
    assert rc == 0, result
    replica = files[PG_FILE]
    assert value(replica, 'pg_in_recovery', cluster='15/standby') == 1
    assert value(replica, 'pg_wal_receiver_streaming', cluster='15/standby') == 1
    assert value(replica, 'pg_wal_position_bytes', cluster='15/standby') > 0
    assert value(replica, 'pg_archive_mode', cluster='15/standby') == 0

    # the standby loses its primary: its receiver stops streaming
    standby.psql("ALTER SYSTEM SET primary_conninfo = 'host=%s port=%d user=postgres'"
                 % (standby.socket_dir, free_port()))
    standby.psql('SELECT pg_reload_conf()')

    def receiver_down():
        rc, result, files = collect(tmp_path, *standby_args)
        assert rc == 0, result
        return value(files[PG_FILE], 'pg_wal_receiver_streaming', cluster='15/standby') == 0
    wait_for(receiver_down, 60, "the standby's WAL receiver to stop streaming")
