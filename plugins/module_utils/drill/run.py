# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run the requested restore drills: each kind under its own lock in its own scratch
space, each target (database, instance, project/environment) one ``Job`` with metrics
kind ``drill_<kind>``. A failing target fails only its own job; the other targets and
kinds still run, and the result holds every one of them."""

from __future__ import annotations

import time

from ansible_collections.codeb.backup.plugins.module_utils.errors import (
    ArtifactError, BackupError, as_backup_error)
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.drill import env, pg_snapshot, pgbackrest, redis
from ansible_collections.codeb.backup.plugins.module_utils.drill.options import (
    METRIC_KIND, check_options, check_scratch_length)
from ansible_collections.codeb.backup.plugins.module_utils.drill.scratch import (
    Scratch, check_scratch_path)

DRILLS = dict(pgbackrest=pgbackrest, pg_snapshot=pg_snapshot, redis=redis, env=env)


def run_drills(params):
    """Validate everything (bad input changes nothing), then run each kind; return the
    result with ``failed`` True if any target or kind failed."""
    began = time.monotonic()
    p = check_options(params)
    # a production directory is the refusal that matters most: say it first
    check_scratch_path(p['scratch_path'], p['protected_paths'])
    check_scratch_length(p['scratch_path'])
    kinds = dict((kind, _run_kind(kind, p)) for kind in p['kinds'])
    bad = ['%s %s: %s' % (kind, t['target'], t['error'])
           for kind, result in kinds.items() for t in result['targets'] if not t['ok']]
    bad += ['%s: %s' % (kind, result['error']) for kind, result in kinds.items()
            if result.get('error')]
    passed = sum(1 for result in kinds.values() for t in result['targets'] if t['ok'])
    msg = ('%d restore drill(s) passed, %d failed: %s' % (passed, len(bad), '; '.join(bad))
           if bad else '%d restore drill(s) passed' % passed)
    return dict(changed=False, failed=bool(bad), msg=msg, kinds=kinds,
                scratch_path=p['scratch_path'], duration_seconds=round(time.monotonic() - began, 3))


def _run_kind(kind, p):
    module = DRILLS[kind]
    result = dict(ok=False, metrics_kind=METRIC_KIND[kind], targets=[])
    try:
        names = module.targets(p)
    except BackupError as exc:
        result.update(error=exc.msg, param=exc.param)
        return result
    jobs = [(name, Job(METRIC_KIND[kind], module.label(name), p['metrics_dir'],
                       what='%s restore drill of %s' % (kind, module.label(name))))
            for name in names]
    pending = list(jobs)
    scratch = Scratch(p['scratch_path'], kind)
    try:
        with scratch.held(p['lock_timeout']) as leftovers, \
                module.environment(p, scratch) as context:
            result['leftovers_cleaned'] = leftovers
            while pending:
                name, job = pending.pop(0)
                result['targets'].append(_run_target(module, p, scratch, context, name, job))
    except Exception as exc:  # the kind could not run: every target not yet drilled failed
        error = as_backup_error(exc, '%s restore drill' % kind)
        result['error'] = error.msg
        for name, job in pending:
            job.finish(error)
            result['targets'].append(dict(target=module.label(name), ok=False, error=error.msg))
    result['ok'] = not result.get('error') and all(t['ok'] for t in result['targets'])
    return result


def _run_target(module, p, scratch, context, name, job):
    outcome = dict(target=module.label(name), ok=False)
    job.start()
    try:
        outcome.update(module.drill(p, scratch, context, name, job))
        failed = outcome.get('failed_checks') or []
        if failed:
            raise ArtifactError('%d check(s) failed: %s' % (
                len(failed), '; '.join('%s: %s' % (f['artifact'], f['error']) for f in failed)))
    except Exception as exc:  # recorded as this target's failure; the others still run
        error = job.finish(exc)
        outcome.update(error=error.msg, duration_seconds=job.duration())
        if error.param:
            outcome['param'] = error.param
        return outcome
    error = job.finish()
    outcome.update(ok=error is None, duration_seconds=job.duration(),
                   recovery_point_lag_seconds=job.gauges.get('drill_recovery_point_lag_seconds'))
    if error is not None:
        outcome['error'] = error.msg
    return outcome
