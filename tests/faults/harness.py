"""Shared pieces of the fault-injection suite: run the host command (optionally killed at a
chosen point or after a delay), small tmpfs mounts to fill or make read-only, and reading
the job metrics a run left."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile

from helpers.servers import wait_for

KILLER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'killer.py')
TRIALS = int(os.environ.get('CODEB_FAULT_TRIALS', '15'))
SEED = int(os.environ.get('CODEB_FAULT_SEED', '20261201'))


def rng(name):
    """A seeded generator per test, so a failure can be replayed with the same seed."""
    return random.Random('%s:%s' % (SEED, name))


class Run(object):
    def __init__(self, proc, out, err, killed):
        self.rc = proc.returncode
        self.out = out
        self.err = err
        self.killed = killed
        self.result = None
        if out.strip():
            try:
                self.result = json.loads(out)
            except ValueError:
                self.result = None

    def __repr__(self):
        return 'Run(rc=%s, killed=%s, out=%r, err=%r)' % (self.rc, self.killed, self.out[-800:],
                                                          self.err[-800:])


def run_cli(argv, at=None, kill_after=None, env=None, timeout=300):
    """Run ``codeb-backup ARGV``; ``at`` kills it at an operation, ``kill_after`` after a
    delay in seconds. Returns a Run; ``killed`` tells whether SIGKILL ended it."""
    cmd = [sys.executable, KILLER] + (['--at', at] if at else []) + ['--'] + list(argv)
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full_env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=kill_after if kill_after is not None else timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the command and the tools it started
        out, err = proc.communicate(timeout=60)
    return Run(proc, out, err, proc.returncode == -9)


def run_ok(argv, **kwargs):
    run = run_cli(argv, **kwargs)
    assert run.rc == 0 and run.result is not None and not run.result.get('failed'), run
    return run


def run_failed(argv, **kwargs):
    """A run that must fail cleanly: exit 1 and a JSON result with failed and msg."""
    run = run_cli(argv, **kwargs)
    assert run.rc == 1, run
    assert run.result is not None and run.result.get('failed') is True, run
    assert run.result.get('msg'), run
    assert 'Traceback' not in run.err, run
    return run


_METRIC_RE = re.compile(r'^(codeb_backup_\w+)\{([^}]*)\}\s+(\S+)$', re.M)


def read_metrics(path):
    """``{metric_name: value}`` of one job's .prom file."""
    with open(path) as handle:
        return {name: float(value) for name, _labels, value in _METRIC_RE.findall(handle.read())}


def metrics_file(metrics_dir, kind, target):
    from ansible_collections.codeb.backup.plugins.module_utils import metrics
    return metrics.metrics_path(str(metrics_dir), kind, target)


def assert_failure_recorded(metrics_dir, kind, target, previous_success=None, since=None):
    """status 0, attempt time at or after ``since``, success time unchanged."""
    values = read_metrics(metrics_file(metrics_dir, kind, target))
    assert values['codeb_backup_last_status'] == 0, values
    if since is not None:
        assert values['codeb_backup_last_attempt_timestamp_seconds'] >= since - 1, values
    if previous_success is None:
        assert 'codeb_backup_last_success_timestamp_seconds' not in values, values
    else:
        assert values['codeb_backup_last_success_timestamp_seconds'] == previous_success, values
    return values


@contextlib.contextmanager
def small_fs(size='4m'):
    """A private tmpfs of ``size``, unmounted afterwards."""
    path = tempfile.mkdtemp(prefix='codeb-fault-fs-')
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%s,mode=0755' % size, 'tmpfs', path],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(['umount', '-l', path], check=True)
        os.rmdir(path)


def fill(path, leave_bytes=0):
    """Fill the filesystem of ``path`` until about ``leave_bytes`` are free; returns the
    filler's path (remove it to free the space again)."""
    filler = os.path.join(path, 'filler')
    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize
    size = max(0, free - leave_bytes)
    with open(filler, 'wb') as handle:
        chunk = b'\0' * 65536
        while size > 0:
            try:
                written = handle.write(chunk[:min(size, len(chunk))])
            except OSError:
                break
            size -= written
        try:
            handle.flush()
        except OSError:
            pass
    return filler


def remount(path, mode):
    subprocess.run(['mount', '-o', 'remount,%s' % mode, path], check=True)


# the fault tests poll with the shared readiness helper
wait_until = wait_for
