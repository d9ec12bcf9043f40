"""The restore_drill role and playbooks/verify_backup.yml, run by real ansible-playbook on
localhost against stores made by the real core from real servers (test_drill's fixtures):
the installed cron entry's own command is run and must pass, and the playbook fails with
the drill's message when an artifact is damaged."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys

import yaml

from helpers.ansible_runner import ROOT, apply_role, run_playbook
from helpers.sshd import cli_wrapper
# production and stores are test_drill's fixtures, used here by name
from integration.test_drill import (  # noqa: F401 pylint: disable=unused-import
    DATABASES, ENV_TARGETS, INSTANCE, SENTINEL, _damage_redis, _scratch_left, _scratch_processes,
    _status, production, stores)

KINDS = ['pg_snapshot', 'redis', 'env']


def _role_vars(stores, tmp_path, **extra):
    return dict({
        'restore_drill_install_host_cli': False,
        'restore_drill_cli_path': cli_wrapper(str(tmp_path / 'codeb-backup')),
        'restore_drill_kinds': KINDS,
        'restore_drill_cron_file': str(tmp_path / 'cron.d' / 'codeb-restore-drill'),
        'restore_drill_scratch_path': stores['scratch'],
        'restore_drill_pg_backup_dir': stores['pg'],
        'restore_drill_redis_backup_dir': stores['redis'],
        'restore_drill_redis_instance': INSTANCE,
        'restore_drill_redis_sentinel_key': SENTINEL,
        'restore_drill_env_root': stores['env'],
        'restore_drill_metrics_dir': stores['metrics'],
    }, **extra)


def _cron_entries(path):
    """``[(schedule fields, user, command)]`` of a cron.d file."""
    entries = []
    for line in open(path).read().splitlines():
        if line.strip() and not line.startswith('#') and not re.match(r'^\w+=', line):
            fields = line.split(None, 6)
            entries.append((fields[:5], fields[5], fields[6]))
    return entries


def _run_cron_command(command):
    """Run a cron entry's command the way cron does: /bin/sh, `\\%` turned into `%`."""
    return subprocess.run(['/bin/sh', '-c', command.replace('\\%', '%')], capture_output=True,
                          text=True, check=False, timeout=600)


def test_role_installs_a_weekly_entry_whose_command_passes_and_is_idempotent(production, stores, tmp_path):
    (tmp_path / 'cron.d').mkdir()
    role_vars = _role_vars(stores, tmp_path)
    rc, out, err = apply_role(tmp_path, 'restore_drill', role_vars, check=True)
    assert rc == 0, (err, json.dumps(out)[-3000:])
    assert out['stats']['localhost']['changed'] >= 1, 'check mode must predict the changes'
    assert not os.path.exists(role_vars['restore_drill_cron_file'])

    rc, out, err = apply_role(tmp_path, 'restore_drill', role_vars)
    assert rc == 0, (err, json.dumps(out)[-3000:])
    [(schedule, user, command)] = _cron_entries(role_vars['restore_drill_cron_file'])
    assert schedule == ['30', '4', '*', '*', '0'] and user == 'root', schedule
    assert '--kinds pg_snapshot,redis,env' in command and '--redis-sentinel-key' in command
    assert 'pgbackrest' not in command

    run = _run_cron_command(command)
    assert run.returncode == 0, (command, run.stdout[-3000:], run.stderr[-3000:])
    status = _status(stores)
    expected = ([('drill_pg_snapshot', db) for db in DATABASES] + [('drill_redis', INSTANCE)]
                + [('drill_env', '%s/%s' % t) for t in ENV_TARGETS])
    assert sorted(status) == sorted(expected)
    assert all(values['codeb_backup_last_status'] == 1 for values in status.values()), status
    assert _scratch_left(stores['scratch']) == [] and _scratch_processes(stores['scratch']) == []

    rc, out, err = apply_role(tmp_path, 'restore_drill', role_vars)
    assert rc == 0, err
    assert out['stats']['localhost']['changed'] == 0, 'second run must report changed=0'
    rc, out, err = apply_role(tmp_path, 'restore_drill', role_vars, check=True)
    assert rc == 0 and out['stats']['localhost']['changed'] == 0, err

    rc, out, err = apply_role(tmp_path, 'restore_drill', dict(role_vars, restore_drill_enabled=False))
    assert rc == 0, err
    # the cron module removes a cron file left without entries
    assert not os.path.exists(role_vars['restore_drill_cron_file'])


def test_every_snapshot_weekday_restores_every_kept_snapshot_that_day_only(production, stores, tmp_path):
    (tmp_path / 'cron.d').mkdir()
    today = datetime.datetime.now().strftime('%w')
    other = str((int(today) + 1) % 7)
    sizes = {}
    for weekday in (other, today):
        role_vars = _role_vars(stores, tmp_path, restore_drill_kinds=['pg_snapshot'],
                               restore_drill_cron_weekday='*',
                               restore_drill_pg_every_snapshot_weekday=weekday)
        rc, out, err = apply_role(tmp_path, 'restore_drill', role_vars)
        assert rc == 0, (err, json.dumps(out)[-3000:])
        [(schedule, _user, command)] = _cron_entries(role_vars['restore_drill_cron_file'])
        assert schedule[4] == '*'
        run = _run_cron_command(command)
        assert run.returncode == 0, (command, run.stderr[-3000:])
        sizes[weekday] = [_status(stores)[('drill_pg_snapshot', db)]['codeb_backup_last_size_bytes']
                          for db in DATABASES]
    # two kept snapshots per database: that weekday restores both, other days the newest
    for newest, every in zip(sizes[other], sizes[today]):
        assert every > newest * 1.5, sizes


def _verify(tmp_path, role_vars):
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text(yaml.safe_dump({'all': {'children': {'codeb_backup': {'hosts': {
        'localhost': {'ansible_connection': 'local',
                      'ansible_python_interpreter': sys.executable}}}}}}))
    return run_playbook(os.path.join(ROOT, 'playbooks', 'verify-backup.yml'),
                        inventory=str(inventory), extra_vars=role_vars)


def _task(out, name):
    for play in out['plays']:
        for task in play['tasks']:
            if task['task']['name'].split(' : ')[-1] == name:
                return task['hosts']['localhost']
    raise AssertionError('no task %r' % name)


def test_verify_playbook_passes_then_fails_naming_the_damaged_artifact(production, stores, tmp_path):
    role_vars = _role_vars(stores, tmp_path)
    rc, out, err = _verify(tmp_path, role_vars)
    assert rc == 0, (err, json.dumps(out)[-3000:])
    summary = _task(out, "Show each kind's outcome")['msg']
    assert 'env: passed (2/2' in summary and 'pg_snapshot: passed (2/2' in summary, summary
    assert 'redis: passed (1/1' in summary, summary
    assert out['stats']['localhost']['changed'] == 0
    # the default kinds of a codeb_backup host without the marker login's password
    defaults = dict((k, v) for k, v in role_vars.items() if k != 'restore_drill_kinds')
    rc, out, err = _verify(tmp_path, defaults)
    assert rc == 0, (err, json.dumps(out)[-3000:])
    summary = _task(out, "Show each kind's outcome")['msg']
    assert 'env: passed' in summary and 'redis: passed' in summary, summary
    assert 'pg_snapshot' not in summary and 'pgbackrest' not in summary, summary

    _kind, _target, damaged = _damage_redis(stores)
    rc, out, err = _verify(tmp_path, role_vars)
    assert rc != 0
    summary = _task(out, "Show each kind's outcome")['msg']
    assert 'redis: FAILED (0/1' in summary and 'env: passed' in summary, summary
    failed = _task(out, 'Fail when a drill failed')
    assert failed['failed'] and damaged in failed['msg'], failed
    status = _status(stores)
    assert status[('drill_redis', INSTANCE)]['codeb_backup_last_status'] == 0
    assert all(v['codeb_backup_last_status'] == 1 for k, v in status.items()
               if k[0] != 'drill_redis'), status
