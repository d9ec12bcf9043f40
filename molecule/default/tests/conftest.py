"""Helpers for the molecule verify tests: exec into the containers (podman exec through
testinfra) and run the collection's playbooks against molecule's inventory."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import testinfra

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))


def inventory():
    path = os.environ.get('CODEB_MOLECULE_INVENTORY')
    if path and os.path.exists(path):
        return path
    found = sorted(glob.glob(os.path.expanduser('~/.ansible/tmp/molecule.*.default/inventory')),
                   key=os.path.getmtime)
    if not found:
        raise RuntimeError('no molecule inventory: run through scripts/molecule.sh')
    return found[-1]


@pytest.fixture(scope='session')
def storage():
    return testinfra.get_host('podman://storage')


@pytest.fixture(scope='session')
def backup():
    return testinfra.get_host('podman://backup')


@pytest.fixture(scope='session')
def app():
    return testinfra.get_host('podman://app')


_PORTS = {}


def cluster_port(host, cluster='main', version='15'):
    """The port of Debian cluster version/cluster on ``host`` as its configuration says
    (pg_lsclusters), i.e. the port the roles must have found and used. Read once per run."""
    key = (host.backend.get_pytest_id(), version, cluster)
    if key not in _PORTS:
        entries = json.loads(host.check_output('pg_lsclusters --json %s %s' % (version, cluster)))
        assert len(entries) == 1, entries
        _PORTS[key] = int(entries[0]['port'])
    return _PORTS[key]


def sql(host, query, socket='/var/run/postgresql', port=None, database='postgres'):
    """Run ``query`` with psql as postgres; ``port`` defaults to the host's 15/main cluster."""
    if port is None:
        port = cluster_port(host)
    cmd = host.run('runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -h %s -p %s -d %s -c %s'
                   % (socket, port, database, _quote(query)))
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def scratch_sql(host, query, socket='/opt/codeb/pitr-scratch/codeb', port=5499):
    cmd = host.run('runuser -u pgbackrest -- psql -X -At -v ON_ERROR_STOP=1 -U postgres -h %s -p %s '
                   '-d postgres -c %s' % (socket, port, _quote(query)))
    assert cmd.rc == 0, cmd.stderr
    return cmd.stdout.strip()


def _quote(text):
    return "'" + text.replace("'", "'\"'\"'") + "'"


def run_playbook(name, extra_vars):
    """Run playbooks/<name> (or the playbook at an absolute path) against molecule's
    containers; return (rc, parsed json output, stderr)."""
    bindir = os.path.dirname(sys.executable)
    # SSH connection sharing within this run only: every task opening its own session made
    # setup-backup.yml take 11-12 min here instead of 5. A master from converge or an earlier
    # run is never reused (its container may have been restarted since by the outage test):
    # each run gets a fresh ControlPath directory, and its masters exit 30 s after it ends.
    control_dir = tempfile.mkdtemp(prefix='codeb-ssh-')
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_STDOUT_CALLBACK='ansible.posix.json',
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, '.collections'),
               ANSIBLE_CONFIG=os.path.join(ROOT, 'ansible.cfg'),
               PATH=bindir + os.pathsep + os.environ.get('PATH', ''),
               ANSIBLE_SSH_CONTROL_PATH_DIR=control_dir,
               ANSIBLE_SSH_ARGS='-o ControlMaster=auto -o ControlPersist=30s '
                                '-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no')
    try:
        proc = subprocess.run([os.path.join(bindir, 'ansible-playbook'), '-i', inventory(),
                               os.path.join(ROOT, 'playbooks', name), '-e', json.dumps(extra_vars)],
                              capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    finally:
        shutil.rmtree(control_dir, ignore_errors=True)
    out = proc.stdout
    parsed = json.loads(out[out.index('{'):]) if '{' in out else {}
    return proc.returncode, parsed, proc.stderr


def task_results(parsed, host):
    """Every (task name, result) for ``host`` in run order."""
    for play in parsed.get('plays', []):
        for task in play.get('tasks', []):
            if host in task.get('hosts', {}):
                yield task['task']['name'], task['hosts'][host]


def failure(parsed):
    for play in parsed.get('plays', []):
        for task in play.get('tasks', []):
            for host, res in task.get('hosts', {}).items():
                if res.get('failed'):
                    return host, task['task']['name'], res
    return None


# Polling deadline (not a test time limit) of wait_for.
DEADLINE = 180


def wait_for(what, check, step=None, deadline=DEADLINE, interval=2.0):
    """Call ``step`` (if any) then ``check`` until ``check`` returns a true value; fail
    with ``what`` and the last value once ``deadline`` seconds have passed."""
    end = time.monotonic() + deadline
    while True:
        if step:
            step()
        value = check()
        if value:
            return value
        assert time.monotonic() < end, 'timed out waiting for %s (last: %r)' % (what, value)
        time.sleep(interval)


def cron_job(host, cron_file, marker):
    """The command of the entry in ``cron_file`` containing ``marker``."""
    for line in host.file(cron_file).content_string.splitlines():
        if marker in line and not line.startswith('#'):
            return line.split(None, 6)[6].replace(' >/dev/null', '')
    raise AssertionError('no %r entry in %s' % (marker, cron_file))
