# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Time from a failure to its alert firing in a real Prometheus, on loopback.

    .venv/bin/python bench/detection_bench.py [--interval 5] [--for 10s]

Starts, on random loopback ports: a real PostgreSQL 15 archiving to a local pgBackRest
repository, a real Redis 7 (AOF on), node_exporter serving a temporary textfile directory
(every other collector off), and Prometheus loading the role's rules rendered by
tests/helpers/monitoring.py with the scenario's ``for:`` (set through
``monitoring_alert_for_overrides`` and ``monitoring_backup_max_age_overrides``, the rules
are not edited). ``codeb-backup collect-metrics --postgres --redis`` runs in a loop every
``--interval`` seconds; Prometheus scrapes and evaluates at the same interval.

Scenarios, one after the other, each measured from the moment the failure starts to the
moment /api/v1/alerts shows the alert ``firing`` (polled every 0.2 s):

1. archive path cut under write load: ``archive_command = 'false'`` (ALTER SYSTEM +
   reload) while a row and a pg_switch_wal() are written every second -> WALArchiveFailing;
2. ``CONFIG SET appendonly no`` on a Redis the collector is told must run AOF ->
   RedisAOFDisabled;
3. a job writing ``last_status 0`` (metrics.write_job_metrics ok=False) -> BackupLastRunFailed;
4. a daily job that stops running: a pg_snapshot success, then nothing, with its max age
   set to 20 s -> BackupFailed, measured from the moment the age passes the threshold.

It then prints, next to each measurement, the worst case the intervals predict and the
worst case with the production defaults (collector every 60 s, scrape and evaluation every
30 s, the role's ``for:`` and thresholds).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, '.collections'))
sys.path.insert(0, os.path.join(ROOT, 'tests'))

from ansible_collections.codeb.backup.plugins.module_utils import metrics  # noqa: E402
from ansible_collections.codeb.backup.plugins.module_utils.postgres import pgbackrest as pb  # noqa: E402
from helpers.monitoring import render_rules, role_defaults  # noqa: E402
from helpers.pgbackrest import archiving_cluster  # noqa: E402
from helpers.servers import RedisServer, free_port, stop_process, wait_for  # noqa: E402

STANZA = 'bench'
ALERTS = ('WALArchiveFailing', 'RedisAOFDisabled', 'BackupLastRunFailed', 'BackupFailed')
PROD = dict(collector=60.0, scrape=30.0, evaluation=30.0)
HOST_COMMAND = ('import sys; sys.path.insert(0, %r)\n'
                'from ansible_collections.codeb.backup.plugins.module_utils.cli import main\n'
                'sys.exit(main(sys.argv[1:]))' % os.path.join(ROOT, '.collections'))


def duration_seconds(text):
    """A Prometheus duration of the role's defaults (``90s``, ``5m``, ``1h``, ``0m``)."""
    units = dict(s=1, m=60, h=3600, d=86400)
    return float(text[:-1]) * units[text[-1]]


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


class Daemon(object):
    """A process this bench started, stopped by its PID."""

    def __init__(self, argv, log):
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(log, 'ab'))

    def stop(self):
        stop_process(self.proc)


def ready(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


class Collector(threading.Thread):
    """``codeb-backup collect-metrics`` every ``interval`` seconds, as cron would (faster)."""

    def __init__(self, argv, interval):
        super().__init__(daemon=True)
        self.argv, self.interval = argv, interval
        self.stopping = threading.Event()
        self.runs = self.failed_runs = 0

    def run(self):
        while not self.stopping.is_set():
            started = time.monotonic()
            proc = subprocess.run([sys.executable, '-c', HOST_COMMAND] + self.argv,
                                  capture_output=True, text=True, check=False)
            self.runs += 1
            self.failed_runs += proc.returncode != 0
            self.stopping.wait(max(0.0, self.interval - (time.monotonic() - started)))


class WriteLoad(threading.Thread):
    """A row and a WAL switch every second, so archive_command runs (and fails) at once."""

    def __init__(self, cluster):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            self.cluster.psql('INSERT INTO bench_load VALUES (now()); SELECT pg_switch_wal()',
                              check=False)
            self.stopping.wait(1.0)


def alert_state(prometheus, name):
    states = [a['state'] for a in get_json(prometheus + '/api/v1/alerts')['data']['alerts']
              if a['labels'].get('alertname') == name]
    return 'firing' if 'firing' in states else ('pending' if states else None)


def time_to_firing(prometheus, name, started, limit=900):
    """Seconds from ``started`` (time.monotonic) until ``name`` fires; and when it was pending."""
    pending = None
    while time.monotonic() - started < limit:
        state = alert_state(prometheus, name)
        if state == 'pending' and pending is None:
            pending = time.monotonic() - started
        if state == 'firing':
            return time.monotonic() - started, pending
        time.sleep(0.2)
    raise SystemExit('%s did not fire within %s s' % (name, limit))


def uptime():
    return subprocess.run(['uptime'], capture_output=True, text=True, check=False).stdout.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--interval', type=float, default=5.0,
                        help='collector, scrape and evaluation interval in seconds')
    parser.add_argument('--for', dest='for_', default='10s', help='for: of the measured alerts')
    args = parser.parse_args()
    interval = args.interval
    for_text = args.for_
    base = tempfile.mkdtemp(prefix='codeb-detection-bench-')
    os.chmod(base, 0o755)
    textfiles = os.path.join(base, 'textfiles')
    os.makedirs(textfiles)
    daemons, threads = [], []
    pg_base = os.path.join(base, 'pg')
    os.makedirs(pg_base)
    cluster = archiving_cluster(pg_base, STANZA)
    redis_dir = os.path.join(base, 'redis')
    os.makedirs(redis_dir)
    redis = RedisServer(redis_dir, appendonly=True)
    load_before = uptime()
    try:
        pb.ensure_stanza(STANZA, repo_user='postgres', config=cluster.config)
        cluster.psql('CREATE TABLE bench_load (t timestamptz)')
        redis.start()
        redis.settle()
        overrides = dict(monitoring_alert_for_overrides={name: for_text for name in ALERTS},
                         monitoring_backup_max_age_overrides=dict(pg_snapshot=20))
        rules = os.path.join(base, 'rules.yml')
        with open(rules, 'w') as handle:
            handle.write(render_rules(overrides))
        subprocess.run(['promtool', 'check', 'rules', rules], check=True, capture_output=True)
        node_port, prom_port = free_port(), free_port()
        daemons.append(Daemon(['prometheus-node-exporter', '--collector.disable-defaults',
                               '--collector.textfile', '--collector.textfile.directory=' + textfiles,
                               '--web.listen-address=127.0.0.1:%d' % node_port],
                              os.path.join(base, 'node_exporter.log')))
        config = os.path.join(base, 'prometheus.yml')
        with open(config, 'w') as handle:
            json.dump({'global': {'scrape_interval': '%gs' % interval,
                                  'evaluation_interval': '%gs' % interval},
                       'rule_files': [rules],
                       'scrape_configs': [{'job_name': 'node', 'static_configs': [
                           {'targets': ['127.0.0.1:%d' % node_port]}]}]}, handle)
        daemons.append(Daemon(['prometheus', '--config.file=' + config,
                               '--storage.tsdb.path=' + os.path.join(base, 'tsdb'),
                               '--web.listen-address=127.0.0.1:%d' % prom_port],
                              os.path.join(base, 'prometheus.log')))
        prometheus = 'http://127.0.0.1:%d' % prom_port
        wait_for(lambda: ready(prometheus + '/-/ready'), 60, 'Prometheus ready')
        metrics.write_job_metrics('pg_snapshot_verify', 'bench', True, 1.0, textfile_dir=textfiles)
        collector = Collector(['collect-metrics', '--metrics-dir', textfiles, '--postgres',
                               '--postgres-unix-socket', cluster.socket_dir,
                               '--postgres-port', str(cluster.port), '--redis',
                               '--redis-port', str(redis.port), '--redis-name', 'bench',
                               '--redis-expect-aof'], interval)
        collector.start()
        threads.append(collector)

        def series_present():
            result = get_json(prometheus + '/api/v1/query?query=' + urllib.request.quote(
                'codeb_backup_pg_archiver_archived_total and on(instance) codeb_backup_redis_aof_enabled'))
            return bool(result['data']['result'])
        wait_for(series_present, 120, 'the collector series in Prometheus')
        wait_for(lambda: all(alert_state(prometheus, n) is None for n in ALERTS[:3]), 120,
                 'no measured alert active before the scenarios')
        results = {}

        # 1. archive path cut under write load
        original = cluster.psql('SHOW archive_command')
        load = WriteLoad(cluster)
        load.start()
        threads.append(load)
        time.sleep(interval * 3)  # the load's WAL is archived fine first: a baseline of counts
        started = time.monotonic()
        cluster.psql("ALTER SYSTEM SET archive_command = 'false'")
        cluster.psql('SELECT pg_reload_conf()')
        results['WALArchiveFailing'] = time_to_firing(prometheus, 'WALArchiveFailing', started)
        cluster.psql("ALTER SYSTEM SET archive_command = '%s'" % original.replace("'", "''"))
        cluster.psql('SELECT pg_reload_conf()')
        load.stopping.set()

        # 2. AOF disabled
        started = time.monotonic()
        redis.client().config_set('appendonly', 'no')
        results['RedisAOFDisabled'] = time_to_firing(prometheus, 'RedisAOFDisabled', started)
        redis.client().config_set('appendonly', 'yes')

        # 3. a job failing
        started = time.monotonic()
        metrics.write_job_metrics('pg_snapshot_verify', 'bench', False, 1.0, textfile_dir=textfiles)
        results['BackupLastRunFailed'] = time_to_firing(prometheus, 'BackupLastRunFailed', started)

        # 4. a daily job that stops: its age passes the (overridden) 20 s threshold
        metrics.write_job_metrics('pg_snapshot', 'bench', True, 1.0, textfile_dir=textfiles)
        started = time.monotonic() + 20
        while time.monotonic() < started:
            time.sleep(0.1)
        results['BackupFailed'] = time_to_firing(prometheus, 'BackupFailed', started)
        report(results, interval, duration_seconds(for_text), collector, load_before, uptime())
    finally:
        for thread in threads:
            thread.stopping.set()
        for thread in threads:
            thread.join(60)
        for daemon in reversed(daemons):
            daemon.stop()
        redis.stop()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def predicted(name, collector, scrape, evaluation, for_seconds):
    """The worst case from the intervals: the fact reaches the textfile within one
    collector run (a job writes its own file at once), node_exporter serves it at the next
    scrape, the rule sees it at the next evaluation and fires ``for`` later (plus one
    evaluation, at which the pending alert is found old enough)."""
    source = 0.0 if name in ('BackupLastRunFailed', 'BackupFailed') else collector
    return source + scrape + evaluation + for_seconds + evaluation


def report(results, interval, for_seconds, collector, load_before, load_after):
    defaults = role_defaults()['monitoring_alert_for']
    print('intervals: collector %gs, scrape %gs, evaluation %gs; for: %gs; collector runs %d '
          '(%d exited 1)' % (interval, interval, interval, for_seconds, collector.runs,
                             collector.failed_runs))
    print('load before: %s' % load_before)
    print('load after:  %s' % load_after)
    print('%-22s %9s %9s %11s %14s %8s' % ('alert', 'pending', 'firing', 'predicted',
                                           'prod. default', 'for'))
    for name in ALERTS:
        firing, pending = results[name]
        prod = predicted(name, PROD['collector'], PROD['scrape'], PROD['evaluation'],
                         duration_seconds(defaults[name]))
        print('%-22s %8.1fs %8.1fs %10.1fs %13.0fs %8s' % (
            name, pending if pending is not None else float('nan'), firing,
            predicted(name, interval, interval, interval, for_seconds), prod, defaults[name]))


if __name__ == '__main__':
    main()
