# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The env drill: in every project/environment of the env store, every version's sha256
matches its log entry, ``master.env`` is byte-identical to the first version and
``current.env`` to the last (the store's own listing check). Read-only: an env "restore"
is a copy of the version file, so reading it back whole is the restore."""

from __future__ import annotations

import contextlib
import os

from ansible_collections.codeb.backup.plugins.module_utils import naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.env import jobs as env_jobs
from ansible_collections.codeb.backup.plugins.module_utils.env.store import LOG


def targets(p):
    root = p['env_root']
    if p['env_targets']:
        return list(p['env_targets'])
    if not os.path.isdir(root):
        raise BackupError('env_root %s does not exist: no env store to drill' % root,
                          param='env_root')
    found = []
    for project in sorted(os.listdir(root)):
        project_dir = os.path.join(root, project)
        if not os.path.isdir(project_dir) or os.path.islink(project_dir):
            continue
        for environment_name in sorted(os.listdir(project_dir)):
            if os.path.isfile(os.path.join(project_dir, environment_name, LOG)):
                found.append((project, environment_name))
    if not found:
        raise BackupError('env_root %s holds no project/environment with a %s to drill'
                          % (root, LOG), param='env_root')
    return found


def label(target):
    return '%s/%s' % target


def environment(_p, _scratch):
    return contextlib.nullcontext()


def drill(p, _scratch, _env, target, job):
    project, environment_name = target
    listing = env_jobs.listing(p['env_root'], project, environment_name)
    if not listing['exists'] or not listing['versions']:
        raise BackupError('env store %s has no versions to drill' % listing['store_path'],
                          param='env_targets')
    problems = listing['problems']
    job.gauges['drill_checks_failed'] = len(problems)
    newest = naming.parse_timestamp('version', listing['current'])
    job.gauges['drill_recovery_point_lag_seconds'] = round(
        (naming.utcnow() - newest).total_seconds(), 3)
    job.size = sum(f['size_bytes'] for f in listing['files'])
    failed = [dict(artifact=problem.split(' ')[0].rstrip(':'), error=problem)
              for problem in problems]
    return dict(project=project, environment=environment_name, versions=listing['count'],
                checked_files=len(listing['files']), failed_checks=failed,
                recovered_point=listing['current'])
