# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The collector job: read each source asked for and write its textfile.

One file per source (``codeb_backup_collector_<source>.prom``), rewritten whole on every
run with ``prometheus_client``'s exposition writer and ``durable.atomic_write_bytes``, so
node_exporter never reads a partial file and two concurrent runs each leave a whole one.
A source that fails still gets its file, with ``codeb_backup_collector_source_up 0`` and
none of its facts (a stale fact would look current), and the run fails naming it: the
other sources are still collected and written.

``pgbackrest check`` is slow and runs less often (``--pgbackrest-check``); the runs in
between keep its last result, read back from the file under a lock, so an every-minute
run neither drops it nor overwrites a check that finished meanwhile.
"""

from __future__ import annotations

import os
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable, locking, metrics
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError, as_backup_error
from ansible_collections.codeb.backup.plugins.module_utils.monitor import (
    pgbackrest_facts, postgres_facts, redis_facts)

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:  # reported by metrics.require_prometheus_client()
    pass

PREFIX = metrics.PREFIX
SOURCES = (pgbackrest_facts.SOURCE, postgres_facts.SOURCE, redis_facts.SOURCE)
COLLECTOR_METRICS = {
    'collector_source_up': 'gauge:1 if the collector read the source, 0 if it failed.',
    'collector_last_run_timestamp_seconds': 'gauge:Unix time the collector last read the source.',
    'collector_duration_seconds': 'gauge:Seconds the collector took to read the source.',
}
# metric (without prefix) -> 'type:help'
METRICS = dict(COLLECTOR_METRICS, **dict(pgbackrest_facts.METRICS, **dict(
    postgres_facts.METRICS, **redis_facts.METRICS)))
LOCK_WAIT = 60.0
# the option that asked for a source, named by a failure of it
SOURCE_PARAM = {pgbackrest_facts.SOURCE: 'pgbackrest_stanza', postgres_facts.SOURCE: 'postgres',
                redis_facts.SOURCE: 'redis'}


def source_path(metrics_dir, source):
    return os.path.join(metrics_dir, '%scollector_%s.prom' % (PREFIX, source))


class _Samples(object):
    """A collector for one file's samples ``(metric, labels, value)``: one family per
    metric, in the order the samples come."""

    def __init__(self, samples):
        self.samples = samples

    def collect(self):
        families = {}
        for name, labels, value in self.samples:
            if name not in families:
                kind, help_text = METRICS[name].split(':', 1)
                family_class = CounterMetricFamily if kind == 'counter' else GaugeMetricFamily
                families[name] = (family_class(PREFIX + name, help_text, labels=list(labels)),
                                  list(labels))
            family, keys = families[name]
            family.add_metric([str(labels[key]) for key in keys], value)
        for family, _keys in families.values():
            yield family


def exposition(samples):
    """The exposition-format text of ``samples``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Samples(samples))
    return generate_latest(registry)


def read_samples(path, names):
    """Samples of the metrics ``names`` in the file at ``path`` (none if it is missing or
    the parser rejects it)."""
    try:
        with open(path) as handle:
            text = handle.read()
        found = []
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name = sample.name[len(PREFIX):]
                if name in names:
                    found.append((name, dict(sample.labels), sample.value))
        return found
    except (OSError, ValueError):
        return []


def write_source(metrics_dir, source, ok, duration, samples, now):
    label = dict(source=source)
    own = [('collector_source_up', label, 1 if ok else 0),
           ('collector_last_run_timestamp_seconds', label, now),
           ('collector_duration_seconds', label, round(duration, 3))]
    path = source_path(metrics_dir, source)
    durable.atomic_write_bytes(path, exposition(own + list(samples)), mode=0o644)
    return path


def _file_lock(metrics_dir, source):
    """The lock of a file a run reads back before it rewrites it."""
    return locking.job_lock(os.path.join(metrics_dir, '.%scollector_%s.lock' % (PREFIX, source)),
                            'collect-metrics write of %s' % source_path(metrics_dir, source),
                            wait=LOCK_WAIT)


def _kept_checks(path, stanzas):
    """The last ``pgbackrest check`` results of ``stanzas`` recorded in ``path``."""
    return [s for s in read_samples(path, pgbackrest_facts.CHECK_METRICS)
            if s[1].get('stanza') in stanzas]


def _gatherers(params):
    """``[(source, gather, down_samples)]`` of the sources ``params`` ask for."""
    sources = []
    stanzas = params.get('pgbackrest_stanza') or []
    if stanzas:
        sources.append((pgbackrest_facts.SOURCE, lambda: pgbackrest_facts.collect(
            stanzas, repo_user=params['pgbackrest_repo_user'], config=params['pgbackrest_config'],
            run_check=params['pgbackrest_check']), list))
    if params.get('postgres'):
        cluster = params['postgres_cluster']
        sources.append((postgres_facts.SOURCE,
                        lambda: postgres_facts.collect(params['postgres_connection'], cluster),
                        lambda: postgres_facts.down_samples(cluster)))
    if params.get('redis'):
        name, expect = params['redis_name'], params['redis_expect_aof']
        sources.append((redis_facts.SOURCE,
                        lambda: redis_facts.collect(params['redis_connection'], name, expect),
                        lambda: redis_facts.down_samples(name, expect)))
    return sources


def collect_metrics(params, now=None):
    """Collect every source ``params`` ask for and write its file; return the result
    (per source: up, duration, file), or raise a BackupError naming each failed source
    after every file is written."""
    metrics.require_prometheus_client()
    metrics_dir = params.get('metrics_dir')
    if not metrics_dir:
        raise BackupError('collect-metrics needs metrics_dir, the textfile directory '
                          'node_exporter reads', param='metrics_dir')
    gatherers = _gatherers(params)
    if not gatherers:
        raise BackupError('nothing to collect: give --pgbackrest-stanza, --postgres and/or --redis',
                          param='pgbackrest_stanza')
    durable.ensure_dir(metrics_dir, mode=0o755)
    results, failed = {}, []
    for source, gather, down in gatherers:
        started = time.monotonic()
        try:
            samples, ok, error = gather(), True, None
        except Exception as exc:  # every failure of a source is reported, never hidden
            samples, ok = down(), False
            error = as_backup_error(exc, 'collecting %s metrics' % source)
        duration = time.monotonic() - started
        run_time = time.time() if now is None else now
        if source == pgbackrest_facts.SOURCE:
            with _file_lock(metrics_dir, source):
                if ok and not params['pgbackrest_check']:
                    samples = samples + _kept_checks(source_path(metrics_dir, source),
                                                     params['pgbackrest_stanza'])
                write_source(metrics_dir, source, ok, duration, samples, run_time)
        else:
            write_source(metrics_dir, source, ok, duration, samples, run_time)
        results[source] = dict(up=ok, duration_seconds=round(duration, 3),
                               file=source_path(metrics_dir, source))
        if error is not None:
            results[source]['msg'] = error.msg
            failed.append(source)
    if failed:
        raise BackupError('collect-metrics: %s failed: %s' % (
            ', '.join(failed), '; '.join('%s: %s' % (s, results[s]['msg']) for s in failed)),
            param=SOURCE_PARAM[failed[0]], sources=results, failed_sources=failed)
    return dict(changed=False, sources=results)
