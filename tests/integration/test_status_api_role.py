"""The status_api role applied by real ansible-playbook on this host without systemd: the
configuration it writes is the one the service loads, the key store is created once, 0600,
and never overwritten, a bad configuration is refused before it is installed, check mode
predicts and writes nothing, and a second run changes nothing. The service itself (systemd,
capabilities, restart on a new core) runs in molecule (tests/test_60_status_api.py)."""

from __future__ import annotations

import json
import os
import stat


from ansible_collections.codeb.backup.plugins.module_utils import cli
from ansible_collections.codeb.backup.plugins.module_utils.status.config import load_config
from helpers.ansible_runner import apply_role
from helpers.sshd import cli_wrapper

PROJECTS = [{'name': 'worb', 'team': 'worb', 'databases': ['worb'], 'redis_instance': 'redis'},
            {'name': 'darak', 'team': 'darak', 'env_project': 'da_rak'}]


def _role_vars(tmp_path, **extra):
    return dict({
        'status_api_install_host_cli': False,
        'status_api_install_packages': False,
        'status_api_systemd': False,
        # an existing system user whose shell and home already are the role's (Debian's nobody)
        'status_api_user': 'nobody',
        'host_cli_path': cli_wrapper(str(tmp_path / 'codeb-backup')),
        'status_api_config_path': str(tmp_path / 'etc' / 'status-api.json'),
        'status_api_keys_file': str(tmp_path / 'etc' / 'status-api-keys.json'),
        'status_api_listen_port': 8471,
        'status_api_pg_snapshot_dir': str(tmp_path / 'pg'),
        'status_api_projects': PROJECTS,
    }, **extra)


def _changed_tasks(out):
    return [task['task']['name'].split(' : ', 1)[-1] for play in out['plays'] for task in play['tasks']
            if task['hosts']['localhost'].get('changed')]


def test_role_installs_a_config_the_service_loads_and_a_key_store_once(tmp_path, capsys):
    role_vars = _role_vars(tmp_path)
    config_path = tmp_path / 'etc' / 'status-api.json'
    keys_file = tmp_path / 'etc' / 'status-api-keys.json'

    rc, out, err = apply_role(tmp_path, 'status_api', role_vars, check=True, diff=True)
    assert rc == 0, (err, json.dumps(out)[-3000:])
    assert 'Write the configuration (checked by serve-api --check first)' in _changed_tasks(out)
    assert not (tmp_path / 'etc').exists(), 'check mode wrote files'

    rc, out, err = apply_role(tmp_path, 'status_api', role_vars)
    assert rc == 0, (err, json.dumps(out)[-3000:])
    config = load_config(str(config_path))
    assert config['listen_port'] == 8471 and config['keys_file'] == str(keys_file)
    assert config['pg_snapshot_dir'] == str(tmp_path / 'pg')
    assert config['tls_certfile'] is None and config['log_file'] is None
    assert config['projects']['worb']['redis_instance'] == 'redis'
    assert config['projects']['darak']['env_project'] == 'da_rak'
    assert stat.S_IMODE(os.stat(keys_file).st_mode) == 0o600
    assert any('does not run systemd' in task['hosts']['localhost'].get('msg', '')
               for play in out['plays'] for task in play['tasks'])

    # a key added by the host command survives the next run of the role
    assert cli.main(['api-key', 'add', '--team', 'worb', '--role', 'viewer',
                     '--keys-file', str(keys_file)]) == 0
    added = json.loads(capsys.readouterr().out)
    rc, out, err = apply_role(tmp_path, 'status_api', role_vars)
    assert rc == 0, err
    assert out['stats']['localhost']['changed'] == 0, _changed_tasks(out)
    assert [record['id'] for record in json.loads(keys_file.read_text())['keys']] == [added['id']]


def test_bad_configuration_is_refused_before_it_is_installed(tmp_path):
    good = _role_vars(tmp_path)
    rc, _out, err = apply_role(tmp_path, 'status_api', good)
    assert rc == 0, err
    before = (tmp_path / 'etc' / 'status-api.json').read_bytes()

    bad = _role_vars(tmp_path, status_api_projects=[{'name': 'worb', 'team': 'team_with_underscore'}])
    rc, out, _err = apply_role(tmp_path, 'status_api', bad)
    assert rc != 0
    failed = [task['hosts']['localhost'] for play in out['plays'] for task in play['tasks']
              if task['hosts']['localhost'].get('failed')]
    assert len(failed) == 1 and 'team_with_underscore' in json.dumps(failed[0])
    assert (tmp_path / 'etc' / 'status-api.json').read_bytes() == before
