"""The whole system on one machine, as the user types it, in a fresh Debian 12 with systemd.

A podman container from the image the molecule scenarios boot (scripts/build-image.sh),
on a network of its own, with the checkout and the project's Python bind-mounted read-only
at their own paths. Inside it, ``ansible-playbook playbooks/setup-backup.yml`` runs with
the repository's ansible.cfg, i.e. on the default inventory ``inventories/local`` where
every group is that machine (the one-host shape of postgresql_backup). Then: a second run
and a ``--check --diff`` run report changed=0, WAL archiving and the first full backup
work, and a PITR into a scratch cluster (playbooks/restore.yml) recovers a row written a
moment before and not one written after. The first setup run and the PITR are launched
the way AWX launches their job templates: ansible-runner, inside the container, on a private
data directory holding the templates' extra vars and the local inventory. The container and
its network are removed afterwards.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from helpers.awx import TEMPLATES, failures, job_dir, runner_cmdline
from helpers.servers import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONTAINERS_CONF = os.path.join(ROOT, 'molecule', 'containers.conf')
# Names of their own: never the molecule scenarios' (storage/backup/app, codeb-molecule*).
NAME = 'codeb-onehost-%d' % os.getpid()
PLAYBOOK_TIMEOUT = 1800


def _env():
    env = dict(os.environ, CONTAINERS_CONF=CONTAINERS_CONF)
    return env


def podman(*args, check=True, timeout=300):
    proc = subprocess.run(['podman'] + list(args), env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError('podman %s failed (rc %d):\n%s\n%s'
                             % (' '.join(args), proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:]))
    return proc


CONTAINER_PATH = '%s:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' % os.path.join(
    ROOT, '.venv', 'bin')


def in_container(argv, check=True, timeout=300):
    """Run argv in the container, from the repository root, with the project's ansible."""
    return podman('exec', '-w', ROOT, '-e', 'ANSIBLE_CONFIG=%s' % os.path.join(ROOT, 'ansible.cfg'),
                  '-e', 'ANSIBLE_FORCE_COLOR=0', '-e', 'PATH=%s' % CONTAINER_PATH,
                  NAME, *argv, check=check, timeout=timeout)


def playbook(*args):
    proc = in_container(['ansible-playbook'] + list(args), check=False, timeout=PLAYBOOK_TIMEOUT)
    assert proc.returncode == 0, 'ansible-playbook %s failed (rc %d):\n%s\n%s' % (
        ' '.join(args), proc.returncode, proc.stdout[-12000:], proc.stderr[-4000:])
    return proc.stdout


def awx_job(name, answers=None):
    """Launch job template ``name`` in the container as AWX does: ansible-runner on a private
    data directory with the template's extra vars and survey answers, the local inventory
    (as an inventory source synced from the project) and project/ linked to the checkout.
    Asserts the job succeeded; returns its stdout."""
    parent = tempfile.mkdtemp(prefix='codeb-onehost-awx-')
    try:
        return _awx_job(name, answers, parent)
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _awx_job(name, answers, parent):
    host_dir, _extravars = job_dir(name, parent, answers,
                                   inventory_dir=os.path.join(ROOT, 'inventories', 'local'),
                                   project=None, path=CONTAINER_PATH)
    inside = '/root/%s' % os.path.basename(host_dir)
    podman('cp', host_dir, '%s:%s' % (NAME, inside))
    in_container(['ln', '-s', ROOT, inside + '/project'])
    argv = ['ansible-runner', 'run', inside, '-p', TEMPLATES[name]['playbook'], '--ident', 'job']
    if runner_cmdline(name):
        argv.append('--cmdline=%s' % runner_cmdline(name))
    in_container(argv, check=False, timeout=PLAYBOOK_TIMEOUT)
    artifacts = os.path.join(host_dir, 'artifacts')
    podman('cp', '%s:%s/artifacts/job' % (NAME, inside), artifacts)

    def read(name):
        with open(os.path.join(artifacts, name)) as handle:
            return handle.read()
    events = []
    for path in sorted(glob.glob(os.path.join(artifacts, 'job_events', '*.json'))):
        with open(path) as handle:
            events.append(json.load(handle))
    status, rc, stdout = read('status').strip(), read('rc').strip(), read('stdout')
    assert (status, rc) == ('successful', '0'), 'job %s: %s rc %s, failed tasks %s\n%s' % (
        name, status, rc, failures(events), stdout[-12000:])
    return stdout


def recap(output):
    """{'ok': n, 'changed': n, 'failed': n, ...} of the one host's PLAY RECAP line."""
    lines = [line for line in output.splitlines() if re.match(r'^localhost\s+:\s+ok=', line)]
    assert len(lines) == 1, 'expected one PLAY RECAP line for localhost:\n%s' % output[-4000:]
    return dict((key, int(value)) for key, value in re.findall(r'(\w+)=(\d+)', lines[-1]))


def changed_tasks(output):
    """Names of the tasks that reported changed (for the failure message)."""
    names, task = [], None
    for line in output.splitlines():
        if line.startswith('TASK ['):
            task = line
        elif line.startswith('changed:') and task:
            names.append(task)
    return names


def psql(sql, db='postgres', host='/var/run/postgresql', port=None):
    argv = ['runuser', '-u', 'postgres', '--', 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1',
            '-h', host, '-d', db, '-c', sql]
    if port is not None:
        argv[-4:-4] = ['-p', str(port)]
    return in_container(argv).stdout.strip()


@pytest.fixture(scope='module')
def container():
    image = subprocess.run([os.path.join(ROOT, 'scripts', 'build-image.sh')], env=_env(),
                           stdout=subprocess.PIPE, text=True, check=True, timeout=3600).stdout.strip()
    mounts = [ROOT, os.path.realpath(os.path.join(ROOT, '.venv'))]
    # The venv's interpreter: the container's own /usr/bin/python3 when the venv was made
    # from it (same Debian 12), else the Python build the venv links to, read-only.
    base = os.path.realpath(sys.base_prefix)
    if base != '/usr':
        mounts.append(base)
    volumes = []
    for path in sorted(set(mounts)):
        volumes += ['-v', '%s:%s:ro' % (path, path)]
    podman('network', 'create', NAME)
    try:
        # DAC_READ_SEARCH: the status API service reads the root-only stores with it alone,
        # and podman does not grant it to a container by default
        podman('run', '-d', '--name', NAME, '--hostname', NAME, '--network', NAME,
               '--cap-add', 'DAC_READ_SEARCH', '--systemd=always', *volumes, image,
               '/lib/systemd/systemd')

        def booted():
            state = podman('exec', NAME, 'systemctl', 'is-system-running', check=False).stdout.strip()
            return state in ('running', 'degraded')
        wait_for(booted, 180, 'systemd in %s to finish booting' % NAME)
        # The image's own PostgreSQL and Redis come up with systemd: the user's starting point.
        wait_for(lambda: podman('exec', NAME, 'pg_isready', '-q', check=False).returncode == 0,
                 120, 'PostgreSQL 15/main in %s' % NAME)
        yield NAME
    finally:
        podman('rm', '-f', '-t', '5', NAME, check=False)
        podman('network', 'rm', '-f', NAME, check=False)


@pytest.fixture(scope='module')
def set_up(container):
    """The setup job template (setup_backup.yml, which setup-backup.yml imports), then the
    user's command twice, once in check mode; the outputs."""
    first = awx_job('codeb.backup: setup')
    second = playbook('playbooks/setup-backup.yml')
    check = playbook('playbooks/setup-backup.yml', '--check', '--diff')
    return first, second, check


def test_setup_backup_is_idempotent_on_one_host(set_up):
    first, second, check = set_up
    assert recap(first)['changed'] > 0
    assert recap(second)['changed'] == 0, 'second run changed:\n%s' % '\n'.join(changed_tasks(second))
    assert recap(second)['failed'] == 0
    assert recap(check)['changed'] == 0, '--check --diff predicts changes:\n%s' % '\n'.join(changed_tasks(check))


def test_one_host_shape_local_repository(set_up):
    conf = in_container(['cat', '/etc/pgbackrest.conf']).stdout
    assert 'repo1-path=/opt/codeb/pgbackrest' in conf
    assert 'repo1-host' not in conf and 'pg1-host' not in conf
    owner = in_container(['stat', '-c', '%U', '/opt/codeb/pgbackrest']).stdout.strip()
    assert owner == 'postgres'
    cron = in_container(['cat', '/etc/cron.d/codeb-backup-pgbackrest']).stdout
    for kind in ('full', 'diff', 'incr'):
        assert re.search(r'pgbackrest-backup --stanza codeb --type %s\s+--repo-user postgres' % kind, cron), cron
    # no SSH between the two sides: no pgbackrest user
    assert in_container(['id', 'pgbackrest'], check=False).returncode != 0


def test_archiving_and_backup_work(set_up):
    in_container(['runuser', '-u', 'postgres', '--', 'pgbackrest', '--stanza=codeb', 'check'])
    info = json.loads(in_container(['runuser', '-u', 'postgres', '--', 'pgbackrest', '--stanza=codeb',
                                    '--output=json', 'info']).stdout)
    assert info[0]['status']['code'] == 0, info
    assert [b['type'] for b in info[0]['backup']][:1] == ['full'], info
    # a backup the way cron takes it
    in_container(['/usr/local/bin/codeb-backup', 'pgbackrest-backup', '--stanza', 'codeb', '--type', 'incr',
                  '--repo-user', 'postgres', '--metrics-dir', '/var/lib/prometheus/node-exporter'],
                 timeout=900)
    info = json.loads(in_container(['runuser', '-u', 'postgres', '--', 'pgbackrest', '--stanza=codeb',
                                    '--output=json', 'info']).stdout)
    assert 'incr' in [b['type'] for b in info[0]['backup']], info


def test_pitr_to_scratch_recovers_a_row_written_a_moment_before(set_up):
    marker = 'before-%d' % time.time_ns()
    psql('CREATE TABLE IF NOT EXISTS onehost_probe (marker text PRIMARY KEY)')
    psql("INSERT INTO onehost_probe VALUES ('%s')" % marker)
    target = psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
    # committed after the target: the recovery must stop before it
    wait_for(lambda: psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')") > target,
             10, 'the clock to pass the target time')
    after = 'after-%d' % time.time_ns()
    psql("INSERT INTO onehost_probe VALUES ('%s')" % after)
    # the restore job template with its survey answers
    awx_job('codeb.backup: restore', {'target_time': target, 'restore_to': 'scratch'})
    scratch = '/opt/codeb/pitr-scratch/codeb'
    rows = psql('SELECT marker FROM onehost_probe ORDER BY marker', host=scratch, port=5499).splitlines()
    assert marker in rows and after not in rows, rows
