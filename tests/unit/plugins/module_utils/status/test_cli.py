"""``codeb-backup api-key add|list|revoke``: the key printed once, never listed."""

from __future__ import annotations

import json

from ansible_collections.codeb.backup.plugins.module_utils import cli


def run(capsys, *argv):
    code = cli.main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def test_add_list_revoke(capsys, tmp_path):
    keys_file = str(tmp_path / 'keys.json')
    code, added = run(capsys, 'api-key', 'add', '--team', 'default', '--role', 'admin',
                      '--name', 'ci', '--keys-file', keys_file)
    assert code == 0 and set(added) == {'id', 'team', 'role', 'name', 'created', 'key'}
    assert added['key'].startswith('codeb_default_admin_')
    code, listed = run(capsys, 'api-key', 'list', '--keys-file', keys_file)
    assert code == 0 and [k['id'] for k in listed['keys']] == [added['id']]
    assert added['key'] not in json.dumps(listed) and 'sha256' not in json.dumps(listed)
    code, revoked = run(capsys, 'api-key', 'revoke', '--id', added['id'], '--keys-file', keys_file)
    assert code == 0 and revoked['changed'] is True
    code, listed = run(capsys, 'api-key', 'list', '--keys-file', keys_file)
    assert listed['keys'][0]['revoked'] == revoked['revoked']


def test_bad_team_fails_naming_team_and_writes_nothing(capsys, tmp_path):
    keys_file = tmp_path / 'keys.json'
    code, result = run(capsys, 'api-key', 'add', '--team', '../x', '--role', 'viewer',
                       '--keys-file', str(keys_file))
    assert code == 1 and result['failed'] is True and result['param'] == 'team'
    assert not keys_file.exists()


def test_missing_config_fails_naming_config(capsys, tmp_path):
    code, result = run(capsys, 'status', '--project', 'worb', '--config', str(tmp_path / 'no.json'))
    assert code == 1 and result['param'] == 'config'


def test_serve_api_check_validates_without_serving(capsys, tmp_path):
    path = tmp_path / 'status-api.json'
    path.write_text(json.dumps({'listen_port': 8471, 'projects': [{'name': 'worb', 'team': 'worb'}]}))
    code, result = run(capsys, 'serve-api', '--config', str(path), '--check')
    assert code == 0 and result['changed'] is False
    assert result['listen'] == '127.0.0.1:8471' and result['projects'] == ['worb']


def test_serve_api_check_names_the_bad_key(capsys, tmp_path):
    path = tmp_path / 'status-api.json'
    path.write_text(json.dumps({'listen_port': 'high'}))
    code, result = run(capsys, 'serve-api', '--config', str(path), '--check')
    assert code == 1 and result['param'] == 'listen_port'
