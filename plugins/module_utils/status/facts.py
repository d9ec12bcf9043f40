# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status API's answers: the facts the metrics carry, read back from Prometheus, and
what the backup host's stores hold.

``backup_status`` is the design's shape (``postgresql``, ``redis``, ``env``);
``backup_list`` lists the snapshots and env versions with the last restore drill of each
kind. Every time is ISO 8601 UTC with a ``Z`` or None, every missing series is None (a
fact nobody wrote is unknown, not an error), and a Prometheus that cannot answer raises
``FactsUnavailable`` (the API's 503) rather than an answer full of unknowns.

Job metrics (``codeb_backup_last_*{kind,target}``) of one (kind, target) may come from
several hosts (Prometheus's ``instance``): the newest success anywhere is the success, its
host's size is the size, and the host with the newest attempt gives the status and the
duration. Answers are cached per (tool, project) for ``cache_seconds``; the class is
thread-safe (the API calls it from a thread pool).
"""

from __future__ import annotations

import copy
import math
import re
import threading
import time

from ansible_collections.codeb.backup.plugins.module_utils import naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.metrics import PREFIX
from ansible_collections.codeb.backup.plugins.module_utils.status import listing
from ansible_collections.codeb.backup.plugins.module_utils.status.errors import FactsUnavailable
from ansible_collections.codeb.backup.plugins.module_utils.status.prometheus import (
    PrometheusClient, alternatives, quote, regex_escape)

__all__ = ['FactsUnavailable', 'StatusFacts', 'human_size', 'TOOLS']

TOOLS = ('backup_status', 'backup_list')
# the job metrics (metrics.py), by the name the outcome below gives each
JOB_FIELDS = {
    PREFIX + 'last_status': 'status',
    PREFIX + 'last_success_timestamp_seconds': 'success',
    PREFIX + 'last_attempt_timestamp_seconds': 'attempt',
    PREFIX + 'last_duration_seconds': 'duration',
    PREFIX + 'last_size_bytes': 'size',
}
# drill section of backup_list -> job kind of its drill
DRILL_KINDS = (('pgbackrest', 'drill_pgbackrest'), ('pg_snapshot', 'drill_pg_snapshot'),
               ('redis', 'drill_redis'), ('env', 'drill_env'))
# WAL archiving and replication: the primary is the cluster that is not in recovery (a
# standby archiving with archive_mode=always, or cascading, must not be counted). The
# collector does not map clusters to projects: one primary serves them all (the largest
# value wins where there are several).
WAL_ARCHIVED_QUERY = ('max(%(p)spg_archiver_archived_total and on(instance, cluster) '
                      '%(p)spg_in_recovery == 0)' % dict(p=PREFIX))
REPLICATION_LAG_QUERY = ('max(%(p)spg_replication_lag_bytes and on(instance, cluster, '
                         'application_name) %(p)spg_replication_streaming == 1 '
                         'and on(instance, cluster) %(p)spg_in_recovery == 0)' % dict(p=PREFIX))
AOF_ENABLED_QUERY = 'min(%sredis_aof_enabled{redis=%%s})' % PREFIX
PGBACKREST_QUERY = ('{__name__=~"%(p)spgbackrest_(last_backup_timestamp_seconds|backups)", '
                    'stanza=%%s}' % dict(p=PREFIX))
SIZE_UNITS = ('B', 'KB', 'MB', 'GB', 'TB')


def human_size(size):
    """Bytes in the design's units (1 KB = 1024 B): ``"128MB"``, ``"1.5GB"``, ``"512B"``; a
    whole number without decimals, otherwise one decimal. None for an unknown size."""
    if not isinstance(size, (int, float)) or isinstance(size, bool) or not math.isfinite(size) \
            or size < 0:
        return None
    unit = 0
    value = float(size)
    while unit < len(SIZE_UNITS) - 1 and round(value, 1) >= 1024:
        value /= 1024
        unit += 1
    value = round(value, 1)
    if value == int(value):
        return '%d%s' % (value, SIZE_UNITS[unit])
    return '%.1f%s' % (value, SIZE_UNITS[unit])


def env_target_pattern(env_project):
    """The job target of every environment of ``env_project`` (``<project>/<environment>``)."""
    return regex_escape(env_project) + '/' + naming.NAME_PATTERN


def _project_names(project):
    """``(databases, redis_instance, env_project)`` of a project, each name validated."""
    if not isinstance(project, dict) or not project.get('name'):
        raise BackupError('project must be a project of the configuration; got %r' % (project,),
                          param='project')
    databases = project.get('databases') or [project['name']]
    for database in databases:
        naming.validate_name('databases', database)
    instance = project.get('redis_instance')
    if instance is not None:
        naming.validate_name('redis_instance', instance)
    env_project = naming.validate_name('env_project', project.get('env_project') or project['name'])
    return list(databases), instance, env_project


def _count(value):
    return None if value is None else int(value)


class StatusFacts(object):
    """The answers of both tools for the projects of ``config`` (``status.config``'s dict).
    ``client``, ``clock`` (Unix time the queries evaluate at) and ``monotonic`` (the
    cache's clock) may be given, for tests."""

    def __init__(self, config, client=None, clock=time.time, monotonic=time.monotonic):
        self.config = config
        self.client = client or PrometheusClient(config['prometheus_url'],
                                                 config.get('prometheus_timeout', 5))
        cache_seconds = config.get('cache_seconds', 0)
        if not isinstance(cache_seconds, (int, float)) or isinstance(cache_seconds, bool) \
                or cache_seconds < 0:
            raise BackupError('cache_seconds must be a number of seconds, 0 or more; got %r'
                              % (cache_seconds,), param='cache_seconds')
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.monotonic = monotonic
        self._cache = {}  # (tool, project) -> (monotonic time asked, answer)
        self._computing = {}  # (tool, project) -> the lock of whoever computes it
        self._lock = threading.Lock()

    # ---- the tools ----

    def backup_status(self, project):
        return self._cached('backup_status', project, self._backup_status)

    def backup_list(self, project):
        return self._cached('backup_list', project, self._backup_list)

    # ---- cache ----

    def _cached(self, tool, project, compute):
        """``compute(project)``, or its answer of less than ``cache_seconds`` ago. One caller
        at a time computes a missing answer and the others wait for it, so a burst of
        requests at expiry asks Prometheus once. A failure is never cached: the next
        request asks again."""
        if not self.cache_seconds:
            return compute(project)
        key = (tool, project.get('name') if isinstance(project, dict) else None)
        with self._lock:
            answer = self._fresh(key)
            if answer is not None:
                return copy.deepcopy(answer)
            computing = self._computing.setdefault(key, threading.Lock())
        with computing:
            with self._lock:
                answer = self._fresh(key)
            if answer is None:
                started = self.monotonic()
                answer = compute(project)
                with self._lock:
                    self._cache[key] = (started, answer)
        return copy.deepcopy(answer)

    def _fresh(self, key):
        """The cached answer of ``key`` if it is fresh (call holding ``_lock``)."""
        now, hit = self.monotonic(), self._cache.get(key)
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        return None

    # ---- answers ----

    def _backup_status(self, project):
        databases, instance, env_project = _project_names(project)
        at = self.clock()
        wanted = {'pg_snapshot': [regex_escape(d) for d in databases],
                  'env': [env_target_pattern(env_project)]}
        if instance is not None:
            wanted['redis_rdb'] = wanted['redis_aof'] = [regex_escape(instance)]
        jobs = self.job_outcomes(wanted, at)
        successes = [jobs.get(('pg_snapshot', d), {}).get('success') for d in databases]
        oldest = min(successes) if successes and None not in successes else None
        lag = _count(self._value(REPLICATION_LAG_QUERY, at))
        redis = dict(aofEnabled=None, lastRdbSave=None, aofSize=None)
        if instance is not None:
            aof = self._value(AOF_ENABLED_QUERY % quote(instance), at)
            redis = dict(aofEnabled=None if aof is None else aof == 1,
                         lastRdbSave=listing.epoch_time(
                             jobs.get(('redis_rdb', instance), {}).get('success')),
                         aofSize=human_size(jobs.get(('redis_aof', instance), {}).get('size')))
        env_successes = [o['success'] for (kind, _t), o in jobs.items()
                         if kind == 'env' and o['success'] is not None]
        return dict(
            postgresql=dict(lastSnapshot=listing.epoch_time(oldest),
                            walArchived=_count(self._value(WAL_ARCHIVED_QUERY, at)),
                            replicationLag=None if lag is None else '%s bytes' % lag),
            redis=redis,
            env=dict(lastBackup=listing.epoch_time(max(env_successes) if env_successes else None),
                     versions=len(listing.env_versions(self.config['env_root'], env_project))))

    def _backup_list(self, project):
        databases, instance, env_project = _project_names(project)
        at = self.clock()
        stanza = self.config.get('pgbackrest_stanza')
        wanted = {'drill_pg_snapshot': [regex_escape(d) for d in databases],
                  'drill_env': [env_target_pattern(env_project)]}
        if stanza:
            wanted['drill_pgbackrest'] = [regex_escape(stanza)]
        if instance is not None:
            wanted['drill_redis'] = [regex_escape(instance)]
        jobs = self.job_outcomes(wanted, at)
        drills = {}
        for section, kind in DRILL_KINDS:
            drills[section] = _worst_drill([o for (k, _t), o in sorted(jobs.items()) if k == kind])
        return dict(
            project=project['name'],
            postgresql=dict(snapshots=listing.pg_snapshots(self.config['pg_snapshot_dir'], databases),
                            pgbackrest=self.pgbackrest(stanza, at)),
            redis=dict(instance=instance,
                       snapshots=listing.redis_snapshots(self.config['redis_backup_dir'])
                       if instance is not None else []),
            env=dict(versions=listing.env_versions(self.config['env_root'], env_project)),
            drills=drills)

    # ---- facts from Prometheus ----

    def _value(self, expr, at):
        """The value of a query that aggregates to one sample, or None (no series)."""
        samples = self.client.query(expr, at)
        return samples[0][1] if samples else None

    def job_outcomes(self, wanted, at):
        """``{(kind, target): outcome}`` of the job metrics of ``wanted`` (kind -> RE2
        patterns of its targets, each matching the whole target), with ``outcome`` the
        dict ``status, success, attempt, duration, size`` (None where no series)."""
        # the patterns use only the subset of RE2 that Python's re shares
        matchers = {kind: [re.compile(r'\A(?:%s)\Z' % p) for p in patterns]
                    for kind, patterns in wanted.items()}
        targets = sorted(set(p for patterns in wanted.values() for p in patterns))
        expr = '{__name__=~%s, kind=~%s, target=~%s}' % (
            quote(alternatives(JOB_FIELDS)), quote(alternatives(wanted)),
            quote('|'.join(targets)))
        per_host = {}
        for labels, value in self.client.query(expr, at):
            kind, target, field = labels.get('kind'), labels.get('target'), \
                JOB_FIELDS.get(labels.get('__name__'))
            if field is None or value is None or kind not in matchers \
                    or not any(m.match(target or '') for m in matchers[kind]):
                continue
            key = (kind, target)
            per_host.setdefault(key, {}).setdefault(labels.get('instance'), {})[field] = value
        return dict((key, _merge_hosts(hosts.values())) for key, hosts in per_host.items())

    def pgbackrest(self, stanza, at):
        """The repository's newest backups of ``stanza`` and how many it holds."""
        answer = dict(stanza=stanza, lastFull=None, lastDiff=None, lastIncr=None, backups=None)
        if not stanza:
            return answer
        last, counts = {}, {}
        for labels, value in self.client.query(PGBACKREST_QUERY % quote(stanza), at):
            backup_type, name = labels.get('backup_type'), labels.get('__name__', '')
            if value is None or backup_type not in ('full', 'diff', 'incr'):
                continue
            into = last if name.endswith('_timestamp_seconds') else counts
            into[backup_type] = max(value, into.get(backup_type, value))  # over hosts
        answer.update(lastFull=listing.epoch_time(last.get('full')),
                      lastDiff=listing.epoch_time(last.get('diff')),
                      lastIncr=listing.epoch_time(last.get('incr')),
                      backups=int(sum(counts.values())) if counts else None)
        return answer


def _merge_hosts(hosts):
    """One (kind, target)'s outcome over the hosts that report it (see the module doc)."""
    hosts = list(hosts)
    outcome = dict(status=None, success=None, attempt=None, duration=None, size=None)
    succeeded = [h for h in hosts if h.get('success') is not None]
    if succeeded:
        newest = max(succeeded, key=lambda h: h['success'])
        outcome.update(success=newest['success'], size=newest.get('size'))
    attempted = max(hosts, key=lambda h: h.get('attempt') or 0)
    outcome.update(attempt=attempted.get('attempt'), status=attempted.get('status'),
                   duration=attempted.get('duration'))
    return outcome


def _worst_drill(outcomes):
    """The drill answer of the worst of ``outcomes`` (failed before ok, then the oldest
    success, none being the oldest), or None when no drill of the kind has run."""
    if not outcomes:
        return None
    worst = min(outcomes, key=lambda o: (o['status'] == 1, o['success'] or 0))
    return dict(status='ok' if worst['status'] == 1 else 'failed',
                lastSuccess=listing.epoch_time(worst['success']),
                lastAttempt=listing.epoch_time(worst['attempt']),
                durationSeconds=None if worst['duration'] is None else float(worst['duration']))
