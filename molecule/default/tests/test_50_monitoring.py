"""The monitoring role end to end: the real Prometheus on the backup host scrapes every
host's node_exporter, has loaded every rule of the collection and holds our series; then
real failures (archive path cut under write load, AOF turned off, a job whose backup
directory is unusable) make Prometheus's own alerts go pending, then firing, and resolve
once put back. The scenario's short intervals and `for:` come from molecule.yml's
monitoring variables; the rules are the role's template as shipped."""

from __future__ import annotations

import json
import urllib.parse

import pytest
import testinfra
import yaml

from conftest import cluster_port, cron_job, sql, wait_for

PROMETHEUS = 'http://127.0.0.1:9090'
RULES = '/etc/prometheus/rules/codeb-backup.rules.yml'
METRICS_DIR = '/var/lib/prometheus/node-exporter'
CRON_FILE = '/etc/cron.d/codeb-monitoring'
HOSTS = ('storage', 'backup', 'app')
# The scenario scrapes and evaluates every 5 s and its alerts wait 10 s; a collector run
# every cycle makes a change visible at once.

GET = ('python3 -c "import sys, urllib.request; '
       'sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())" %s')


def api(backup, path):
    """GET Prometheus's HTTP API on the backup host (from inside the container)."""
    out = json.loads(backup.check_output(GET % _quote(PROMETHEUS + path)))
    assert out['status'] == 'success', out
    return out['data']


def query(backup, expr):
    return api(backup, '/api/v1/query?query=' + urllib.parse.quote(expr))['result']


def alerts(backup, name):
    """{state} of the alerts called ``name`` that Prometheus holds now (pending/firing)."""
    return {a['state'] for a in api(backup, '/api/v1/alerts')['alerts']
            if a['labels'].get('alertname') == name}


def _quote(text):
    return "'" + text.replace("'", "'\"'\"'") + "'"


def collector_commands(host):
    """The collector's commands exactly as this host's cron file runs them."""
    commands = []
    for line in host.file(CRON_FILE).content_string.splitlines():
        if not line.strip() or line.startswith('#') or '=' in line.split()[0]:
            continue
        command = line.split(None, 6)[6]  # m h dom mon dow user command
        commands.append(command.replace(' >/dev/null', ''))
    return commands


def collect(host, check=True):
    """Run this host's collector now (the every-minute entry), as cron would."""
    command = [c for c in collector_commands(host) if '--pgbackrest-check' not in c][0]
    result = host.run('sh -c %s' % _quote(command))
    if check:
        assert result.rc == 0, result.stdout + result.stderr
    return result


def rule_names(backup):
    rules = yaml.safe_load(backup.file(RULES).content_string)
    return {rule['alert'] for group in rules['groups'] for rule in group['rules'] if 'alert' in rule}


def test_every_host_has_node_exporter_and_a_collector_entry(storage, backup):
    for name in HOSTS:
        host = testinfra.get_host('podman://' + name)
        assert host.service('prometheus-node-exporter').is_running, name
        assert host.service('prometheus-node-exporter').is_enabled, name
        assert '--collector.textfile.directory=' + METRICS_DIR in host.file(
            '/etc/default/prometheus-node-exporter').content_string
    storage_cmd = collector_commands(storage)
    assert len(storage_cmd) == 1, storage_cmd
    assert '--postgres ' in storage_cmd[0] and '--redis ' in storage_cmd[0]
    assert '--postgres-port %d ' % cluster_port(storage) in storage_cmd[0]
    assert '--redis-expect-aof' in storage_cmd[0]
    backup_cmd = collector_commands(backup)
    assert len(backup_cmd) == 2, backup_cmd  # every minute, and with --pgbackrest-check
    assert all('--pgbackrest-stanza codeb ' in c for c in backup_cmd), backup_cmd
    assert sum('--pgbackrest-check' in c for c in backup_cmd) == 1, backup_cmd
    assert all('--postgres-cluster 15/standby ' in c for c in backup_cmd if '--pgbackrest-check' not in c)


def test_collector_runs_cleanly_on_every_source(storage, backup):
    for host in (storage, backup):
        collect(host)
    check = [c for c in collector_commands(backup) if '--pgbackrest-check' in c][0]
    result = backup.run('sh -c %s' % _quote(check))
    assert result.rc == 0, result.stdout + result.stderr
    for source, host in (('postgres', storage), ('redis', storage), ('pgbackrest', backup)):
        prom = '%s/codeb_backup_collector_%s.prom' % (METRICS_DIR, source)
        assert host.file(prom).exists, prom
        lint = host.run('promtool check metrics < %s' % prom)
        assert lint.rc == 0, lint.stdout + lint.stderr


def test_prometheus_scrapes_every_host(backup):
    expected = {'%s:9100' % name for name in HOSTS} | {'localhost:9090'}

    def health():
        targets = api(backup, '/api/v1/targets')['activeTargets']
        seen = {t['labels']['instance']: t['health'] for t in targets}
        return seen if set(seen) == expected and set(seen.values()) == {'up'} else None
    wait_for('every target up: %s' % sorted(expected), health)


def test_prometheus_loaded_every_rule(backup):
    names = rule_names(backup)
    assert len(names) >= 3, names

    def loaded():
        groups = api(backup, '/api/v1/rules')['groups']
        rules = [r for g in groups for r in g['rules'] if r['type'] == 'alerting']
        by_name = {r['name']: r['health'] for r in rules}
        bad = {n: h for n, h in by_name.items() if h != 'ok'}
        return by_name if set(by_name) == names and not bad else None
    wait_for('every rule of %s loaded and evaluated without error' % RULES, loaded)


def test_prometheus_has_our_series_for_every_kind(storage, backup):
    kinds = set()
    for name in HOSTS:
        host = testinfra.get_host('podman://' + name)
        listing = host.run("grep -ho 'codeb_backup_last_attempt_timestamp_seconds{[^}]*}' %s/*.prom"
                           % METRICS_DIR)
        for series in listing.stdout.split():
            kinds.add(series.split('kind="', 1)[1].split('"', 1)[0])
    # converge ran the first pgBackRest full; the earlier tests ran more jobs
    assert 'pgbackrest_full' in kinds, kinds
    for host in (storage, backup):
        collect(host)

    def present():
        got = {r['metric']['kind'] for r in query(
            backup, 'group by (kind) (codeb_backup_last_attempt_timestamp_seconds)')}
        sources = {r['metric']['source'] for r in query(backup, 'codeb_backup_collector_source_up == 1')}
        return got if kinds <= got and sources == {'postgres', 'redis', 'pgbackrest'} else None
    wait_for('every job kind %s and every collector source up in Prometheus' % sorted(kinds), present)
    for expr in ('codeb_backup_pg_archive_mode{cluster="15/main"} == 1',
                 'codeb_backup_pg_wal_receiver_streaming{cluster="15/standby"} == 1',
                 'codeb_backup_pgbackrest_stanza_status{stanza="codeb"} == 0',
                 'codeb_backup_redis_aof_enabled == 1'):
        wait_for(expr, lambda expr=expr: query(backup, expr))


def _watch(backup, name, step, until_states=('firing',)):
    """Run ``step`` and read the alerts until ``name`` fires; return every state seen."""
    seen = set()

    def check():
        states = alerts(backup, name)
        seen.update(states)
        return set(until_states) <= states
    wait_for('%s firing (seen: %s)' % (name, seen), check, step=step)
    return seen


def _resolved(backup, name, step):
    wait_for('%s resolved' % name, lambda: not alerts(backup, name), step=step, deadline=600)


def test_wal_archive_failing_fires_when_the_archive_path_is_cut(storage, backup):
    """Stop sshd on the backup host (pgBackRest's archive path from storage) while the
    primary writes WAL: archive_command fails, the collector sees the failed counter grow,
    WALArchiveFailing goes pending, then firing; with sshd back it resolves."""
    port = cluster_port(storage)
    sql(storage, 'CREATE TABLE IF NOT EXISTS monitoring_load(i int, ts timestamptz DEFAULT clock_timestamp())')
    assert not alerts(backup, 'WALArchiveFailing')

    def write_and_collect():
        sql(storage, 'INSERT INTO monitoring_load(i) SELECT g FROM generate_series(1, 1000) g', port=port)
        sql(storage, 'SELECT pg_switch_wal()', port=port)
        collect(storage)

    backup.check_output('systemctl stop ssh.service')
    try:
        seen = _watch(backup, 'WALArchiveFailing', write_and_collect)
        assert 'pending' in seen, 'WALArchiveFailing fired without going pending first: %s' % seen
    finally:
        backup.check_output('systemctl start ssh.service')

    def archived_and_collect():
        sql(storage, 'SELECT pg_switch_wal()', port=port)
        collect(storage)
    wait_for('the backlog archived after sshd is back',
             lambda: sql(storage, "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'",
                         port=port) == '0',
             step=archived_and_collect)
    _resolved(backup, 'WALArchiveFailing', lambda: collect(storage))


def test_redis_aof_disabled_fires(storage, backup):
    assert not alerts(backup, 'RedisAOFDisabled')
    storage.check_output('redis-cli CONFIG SET appendonly no')
    try:
        seen = _watch(backup, 'RedisAOFDisabled', lambda: collect(storage))
        assert 'pending' in seen, seen
    finally:
        storage.check_output('redis-cli CONFIG SET appendonly yes')
    _resolved(backup, 'RedisAOFDisabled', lambda: collect(storage))
    assert storage.check_output('redis-cli CONFIG GET appendonly').split() == ['appendonly', 'yes']


def test_backup_last_run_failed_fires_for_an_unusable_backup_dir(storage, backup):
    """The snapshot directory replaced by a plain file (root ignores permission bits, and
    the containers may not set the immutable flag): the daily pg_snapshot job run as cron
    runs it fails, writes last_status 0, BackupLastRunFailed fires for that job; with the
    directory back and the job rerun it resolves."""
    snapshot_dir = '/opt/codeb/db-backup/postgresql'
    job = cron_job(storage, '/etc/cron.d/codeb-pg-snapshot', '--database codeb ')
    name = 'BackupLastRunFailed'

    def firing_for_job():
        return any(a['state'] == 'firing' and a['labels'].get('kind') == 'pg_snapshot'
                   and a['labels'].get('target') == 'codeb'
                   for a in api(backup, '/api/v1/alerts')['alerts'] if a['labels'].get('alertname') == name)

    if sql(storage, "SELECT count(*) FROM pg_database WHERE datname = 'codeb'") == '0':
        sql(storage, 'CREATE DATABASE codeb')
    ok = storage.run('sh -c %s' % _quote(job))  # the job works before it is broken
    assert ok.rc == 0, ok.stdout + ok.stderr
    wait_for('%s not firing for pg_snapshot/codeb before the test' % name, lambda: not firing_for_job(),
             step=lambda: None)
    storage.check_output('mv %s %s.monitoring-test && touch %s' % (snapshot_dir, snapshot_dir, snapshot_dir))
    try:
        failed = storage.run('sh -c %s' % _quote(job))
        assert failed.rc != 0, 'the snapshot job succeeded with its directory replaced by a file'
        assert snapshot_dir in failed.stdout + failed.stderr, failed.stdout + failed.stderr
        seen = set()

        def check():
            seen.update(a['state'] for a in api(backup, '/api/v1/alerts')['alerts']
                        if a['labels'].get('alertname') == name and a['labels'].get('kind') == 'pg_snapshot')
            return firing_for_job()
        wait_for('%s firing for pg_snapshot/codeb (seen %s)' % (name, seen), check)
        assert 'pending' in seen, seen
    finally:
        storage.check_output('rm -f %s && mv %s.monitoring-test %s' % (snapshot_dir, snapshot_dir, snapshot_dir))
    ok = storage.run('sh -c %s' % _quote(job))
    assert ok.rc == 0, ok.stdout + ok.stderr
    wait_for('%s resolved for pg_snapshot/codeb' % name, lambda: not firing_for_job(), deadline=600)


@pytest.fixture(autouse=True, scope='module')
def _collector_installed(storage):
    """The scenario's hosts run the collector every minute; without its cron file nothing
    here could pass, so say so once instead of in every test."""
    assert storage.file(CRON_FILE).exists, CRON_FILE + ' missing: the monitoring role did not run'
