"""env_backup through real ansible-playbook: the modules, playbooks/env.yml (secrets at -vvv)
and the env_backup role (cron through the installed host command, replication with sha256
checked on arrival, idempotence)."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import stat
import subprocess
import sys

import pytest
import yaml

from helpers.ansible_runner import ROOT, run_module, run_playbook
from helpers.trees import file_contents

CANARY = 'CANARY-7f3a9c1e-do-not-print'
APP_ENV = ('# worb production\n'
           'export DATABASE_URL="postgres://worb:%s@db/worb"\n'
           "SMTP_PASSWORD='smtp-%s'\n"
           'FEATURE_X=off # flag\n' % (CANARY, CANARY))


def sha(data):
    return hashlib.sha256(data).hexdigest()


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def store(tmp_path):
    return dict(root=str(tmp_path / 'store'), metrics_dir=str(tmp_path / 'metrics'),
                project='worb')


def test_module_present_is_idempotent_and_check_mode_writes_nothing(tmp_path, store):
    predicted = run_module('codeb.backup.env_backup', dict(store, content=APP_ENV), check=True)
    assert predicted['changed'] is True and predicted['master_created'] is True
    assert not os.path.exists(store['root'])
    first = run_module('codeb.backup.env_backup', dict(store, content=APP_ENV))
    assert first['changed'] is True and first['size_bytes'] == len(APP_ENV.encode())
    assert 'duration_seconds' in first
    second = run_module('codeb.backup.env_backup', dict(store, content=APP_ENV))
    assert second['changed'] is False and second['version'] == first['version']
    before = file_contents(store['root'])
    diff = run_module('codeb.backup.env_backup',
                      dict(store, values={'SMTP_PASSWORD': 'x-' + CANARY, 'NEW': '1'}),
                      check=True, diff=True)
    assert diff['changed'] is True
    assert diff['keys_changed'] == ['SMTP_PASSWORD'] and diff['keys_added'] == ['NEW']
    assert 'SMTP_PASSWORD=********  # changed' in diff['diff']['after']
    assert CANARY not in json.dumps(diff)
    assert file_contents(store['root']) == before


def test_module_restore_versions_with_mode_and_diff(tmp_path, store):
    run_module('codeb.backup.env_backup', dict(store, content=APP_ENV))
    run_module('codeb.backup.env_backup', dict(store, values={'FEATURE_X': 'on'}))
    info = run_module('codeb.backup.env_backup_info', dict(project='worb', root=store['root'],
                                                           verify=True))
    assert info['count'] == 2 and info['versions'][1]['trigger'] == 'set'
    assert info['versions'][1]['keys_changed'] == ['FEATURE_X']
    dest = tmp_path / 'app' / '.env'
    dest.parent.mkdir()
    args = dict(store, state='restored', dest=str(dest), version='master')
    predicted = run_module('codeb.backup.env_backup', args, check=True, diff=True)
    assert predicted['changed'] is True and not dest.exists()
    assert CANARY not in json.dumps(predicted)
    restored = run_module('codeb.backup.env_backup', args)
    assert restored['changed'] is True and dest.read_text() == APP_ENV
    assert mode_of(str(dest)) == 0o600
    assert run_module('codeb.backup.env_backup', args)['changed'] is False
    diff = run_module('codeb.backup.env_backup', dict(args, version=info['current']), diff=True)
    assert diff['changed'] is True and diff['keys_changed'] == ['FEATURE_X']
    assert 'FEATURE_X=********  # changed' in diff['diff']['after']
    assert 'FEATURE_X=on # flag' in dest.read_text()


BAD_INPUT = [
    (dict(project='../../etc', content='A=1'), 'project', 'not allowed'),
    (dict(project='a/b', content='A=1'), 'project', 'not allowed'),
    (dict(project='.', content='A=1'), 'project', 'not allowed'),
    (dict(project='', content='A=1'), 'project', 'non-empty'),
    (dict(project='p' * 200, content='A=1'), 'project', 'at most 63'),
    (dict(project='worb', environment='../prod', content='A=1'), 'environment', 'not allowed'),
    (dict(project='worb', environment='a/b', state='restored', dest='DEST'),
     'environment', 'not allowed'),
    (dict(project='worb', values={'A': True}), 'values', 'boolean'),
    (dict(project='worb', values={'BAD KEY': 'x'}), 'values', 'not a valid .env key'),
    (dict(project='worb', trigger='hourly', content='A=1'), None, 'trigger'),
    (dict(project='worb', values=['A=1']), None, 'values'),
    (dict(project='worb', src='/nonexistent/.env'), 'src', 'cannot read src'),
]


def run_tasks(tasks, check=False, diff=False):
    """Run several module tasks in one ansible-playbook (errors ignored, so every task
    runs); return their results in order. One process instead of one per case."""
    play = [{'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
             'vars': {'ansible_python_interpreter': sys.executable},
             'tasks': [dict(task, name='case %d' % i, ignore_errors=True)
                       for i, task in enumerate(tasks)]}]
    path = os.path.join(ROOT, 'tests', 'output', 'env-cases-%d.yml' % os.getpid())
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as handle:
        json.dump(play, handle)
    try:
        _rc, out, err = run_playbook(path, inventory='localhost,', check=check, diff=diff)
    finally:
        os.unlink(path)
    results = [task['hosts']['localhost'] for task in out['plays'][0]['tasks']]
    assert len(results) == len(tasks), err
    return results


def test_module_bad_input_fails_clearly_and_writes_nothing(tmp_path, store):
    dest = str(tmp_path / 'app.env')
    results = run_tasks([{'codeb.backup.env_backup': dict(
        store, **dict(args, **({'dest': dest} if 'dest' in args else {})))}
        for args, _param, _fragment in BAD_INPUT])
    for (args, param, fragment), result in zip(BAD_INPUT, results):
        assert result.get('failed') is True, args
        assert fragment in result['msg'], (args, result['msg'])
        if param:
            assert result['param'] == param, args
    assert not os.path.exists(store['root'])
    assert not os.path.exists(dest)


def test_module_unknown_version_lists_available_and_changes_nothing(tmp_path, store):
    first = run_module('codeb.backup.env_backup', dict(store, content=APP_ENV))
    dest = tmp_path / '.env'
    dest.write_text('KEEP=1\n')
    result = run_module('codeb.backup.env_backup', dict(store, state='restored', dest=str(dest),
                                                        version='2001-01-01T00:00:00'))
    assert result['failed'] is True and result['param'] == 'version'
    assert 'available: master, current, %s' % first['version'] in result['msg']
    assert dest.read_text() == 'KEEP=1\n'


def test_module_restore_and_set_save_a_hand_edited_dest_first(tmp_path, store):
    first = run_module('codeb.backup.env_backup', dict(store, content=APP_ENV))
    dest = tmp_path / '.env'
    edited = APP_ENV + 'HOT_FIX=%s\n' % CANARY  # edited by hand, never backed up
    dest.write_text(edited)
    restored, bad, set_result = run_tasks([
        {'codeb.backup.env_backup': dict(store, state='restored', dest=str(dest),
                                         version='master')},
        {'codeb.backup.env_backup': dict(store, dest=str(dest), src=str(dest))},
        {'codeb.backup.env_backup': dict(store, values={'FEATURE_X': 'on'}, dest=str(dest))},
    ])
    assert restored['changed'] is True and restored['live_saved'] is True
    assert bad['failed'] is True and bad['param'] == 'dest'
    assert set_result['changed'] is True and set_result['live_saved'] is False
    assert set_result['restored']['changed'] is True and 'FEATURE_X=on # flag' in dest.read_text()
    info = run_module('codeb.backup.env_backup_info', dict(project='worb', root=store['root'],
                                                           verify=True))
    shas = [v['sha256'] for v in info['versions']]
    assert shas[:2] == [first['sha256'], sha(edited.encode())]  # the hand edit was kept
    assert shas[-1] == sha(dest.read_bytes())
    assert CANARY not in json.dumps([restored, bad, set_result, info])


def _env_playbook(tmp_path, action, verbosity=3, **extra):
    extra_vars = dict(project='worb', action=action, env_file=str(tmp_path / 'app' / '.env'),
                      env_backup_root=str(tmp_path / 'store'),
                      env_backup_metrics_dir=str(tmp_path / 'metrics'))
    extra_vars.update(extra)
    return run_playbook(os.path.join(ROOT, 'playbooks', 'env.yml'), extra_vars=extra_vars,
                        verbosity=verbosity, diff=True, json_output=False)


def _recap_changed(stdout):
    line = [x for x in stdout.splitlines() if x.startswith('localhost') and 'changed=' in x][-1]
    return int(line.split('changed=')[1].split()[0])


def test_playbook_set_and_restore_never_print_secrets_at_vvv(tmp_path):
    app = tmp_path / 'app'
    app.mkdir()
    (app / '.env').write_text(APP_ENV)
    os.chmod(str(app / '.env'), 0o644)
    rc, out, err = _env_playbook(tmp_path, 'backup')
    assert rc == 0, out + err
    assert CANARY not in out + err

    new_secret = 'NEW-' + CANARY
    rc, out, err = _env_playbook(tmp_path, 'set', values={'SMTP_PASSWORD': new_secret,
                                                          'FEATURE_X': 'on'})
    assert rc == 0, out + err
    assert CANARY not in out + err, 'a secret value was printed by action=set at -vvv'
    assert 'SMTP_PASSWORD=********' in out  # the masked diff did show which key changed
    live = (app / '.env').read_text()
    assert 'SMTP_PASSWORD="NEW-%s"' % CANARY in live or "SMTP_PASSWORD='NEW-%s'" % CANARY in live
    assert 'FEATURE_X=on # flag' in live
    assert mode_of(str(app / '.env')) == 0o600

    rc, out, err = _env_playbook(tmp_path, 'restore', version='master')
    assert rc == 0, out + err
    assert CANARY not in out + err, 'a secret value was printed by action=restore at -vvv'
    assert (app / '.env').read_text() == APP_ENV
    rc, out, err = _env_playbook(tmp_path, 'restore', version='master', verbosity=0)
    assert rc == 0 and _recap_changed(out) == 0, 'a repeated restore must report changed=0'

    store_dir = tmp_path / 'store' / 'worb' / 'production'
    for path in (tmp_path / 'store', tmp_path / 'store' / 'worb', store_dir):
        assert mode_of(str(path)) == 0o700
    for name in os.listdir(str(store_dir)):
        assert mode_of(str(store_dir / name)) == 0o600, name
    log = json.loads((store_dir / 'backup-log.json').read_text())
    assert [v['trigger'] for v in log['versions']] == ['manual', 'set', 'manual']
    assert CANARY not in (store_dir / 'backup-log.json').read_text()

    rc, out, err = _env_playbook(tmp_path, 'restore', version='1999-01-01T00:00:00',
                                 verbosity=0)
    assert rc != 0 and 'available: master, current' in out
    assert (app / '.env').read_text() == APP_ENV


# ---- the role: cron through the installed host command, replication, idempotence ----

def _apply_role(tmp_path, files):
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text(yaml.safe_dump({'all': {
        'vars': {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable},
        'children': {'codeb_app': {'hosts': {'localhost': None}},
                     'codeb_backup': {'hosts': {'localhost': None}}}}}))
    play = [{'hosts': 'codeb_app', 'gather_facts': False,
             'roles': [{'role': 'codeb.backup.env_backup'}]}]
    path = tmp_path / 'play.yml'
    path.write_text(yaml.safe_dump(play))
    return run_playbook(str(path), inventory=str(inventory), extra_vars={
        'host_cli_lib_dir': str(tmp_path / 'lib'),
        'host_cli_path': str(tmp_path / 'bin' / 'codeb-backup'),
        'host_cli_install_packages': False,
        'env_backup_cli_path': str(tmp_path / 'bin' / 'codeb-backup'),
        'env_backup_files': files,
        'env_backup_root': str(tmp_path / 'app-store'),
        'env_backup_replica_root': str(tmp_path / 'backup-host' / 'env-backup'),
        'env_backup_metrics_dir': str(tmp_path / 'metrics'),
        'env_backup_cron_file': str(tmp_path / 'cron.d' / 'codeb-env-backup'),
    })


def _changed(out):
    return out['stats']['localhost']['changed']


def test_role_backs_up_installs_cron_and_replicates_verified(tmp_path):
    (tmp_path / 'bin').mkdir()
    (tmp_path / 'cron.d').mkdir()
    apps = {}
    for project, environment in (('worb', 'production'), ('codeb', 'staging')):
        path = tmp_path / ('%s-%s.env' % (project, environment))
        path.write_text(APP_ENV)
        apps[(project, environment)] = path
    files = [{'project': p, 'environment': e, 'path': str(path)} for (p, e), path in apps.items()]
    rc, out, err = _apply_role(tmp_path, files)
    assert rc == 0, json.dumps(out)[-3000:] + err
    assert _changed(out) > 0
    app_store = str(tmp_path / 'app-store')
    replica = str(tmp_path / 'backup-host' / 'env-backup')
    assert file_contents(replica) == {k: v for k, v in file_contents(app_store).items()
                                      if not k.endswith('.env-backup.lock')}
    assert mode_of(os.path.join(replica, 'worb', 'production')) == 0o700
    assert mode_of(os.path.join(replica, 'worb', 'production', 'master.env')) == 0o600
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith('codeb-env-')]

    rc, out, err = _apply_role(tmp_path, files)
    assert rc == 0, err
    assert _changed(out) == 0, 'second run must report changed=0'

    # the daily cron entry runs the installed host command (no control node)
    cron = (tmp_path / 'cron.d' / 'codeb-env-backup').read_text()
    jobs = [line for line in cron.splitlines() if 'env backup' in line]
    assert len(jobs) == 2
    job = [j for j in jobs if "--project worb" in j][0]
    fields = job.split(None, 6)
    assert fields[:2] == ['15', '4'] and fields[5] == 'root'
    command = fields[6]
    assert '--trigger daily' in command and command.endswith('>/dev/null')
    apps[('worb', 'production')].write_text(APP_ENV.replace('off', 'on'))
    proc = subprocess.run(shlex.split(command.replace('>/dev/null', '')),
                          capture_output=True, text=True, check=False,
                          env={'PATH': '/usr/bin:/bin'})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)['keys_changed'] == ['FEATURE_X']
    assert CANARY not in proc.stdout + proc.stderr

    # a damaged replica file is noticed (sha256 differs) and copied again
    broken = os.path.join(replica, 'codeb', 'staging', 'master.env')
    with open(broken, 'a') as handle:
        handle.write('TAMPERED=1\n')
    rc, out, err = _apply_role(tmp_path, files)
    assert rc == 0, err
    assert _changed(out) > 0
    assert file_contents(replica) == {k: v for k, v in file_contents(app_store).items()
                                      if not k.endswith('.env-backup.lock')}
    log = json.loads(open(os.path.join(replica, 'worb', 'production', 'backup-log.json')).read())
    assert [v['trigger'] for v in log['versions']] == ['manual', 'daily']
    prom = tmp_path / 'metrics' / 'codeb_backup_env_worb_production.prom'
    assert 'codeb_backup_last_status{kind="env",target="worb/production"} 1' in prom.read_text()
