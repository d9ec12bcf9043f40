"""The status API configuration: defaults filled, projects completed, bad values refused
with the key named."""

from __future__ import annotations

import json

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.status.config import (
    DEFAULTS, load_config, validate_config)


def test_defaults_and_project_defaults(tmp_path):
    path = tmp_path / 'c.json'
    path.write_text(json.dumps({'listen_port': 9000, 'projects': [
        {'name': 'worb', 'team': 'default'},
        {'name': 'shop', 'team': 'ops', 'databases': ['shop', 'shop_audit'],
         'redis_instance': 'redis', 'env_project': 'shopenv'}]}))
    config = load_config(str(path))
    assert set(config) == set(DEFAULTS)
    assert config['listen_port'] == 9000 and config['listen_host'] == '127.0.0.1'
    assert config['rate_limit_failures'] == 10 and config['tls_certfile'] is None
    assert config['projects']['worb'] == {'name': 'worb', 'team': 'default', 'databases': ['worb'],
                                          'redis_instance': None, 'env_project': 'worb'}
    assert config['projects']['shop']['databases'] == ['shop', 'shop_audit']
    assert config['projects']['shop']['env_project'] == 'shopenv'


@pytest.mark.parametrize('raw, param', [
    ({'listen_prot': 1}, 'listen_prot'),
    ({'listen_port': 0}, 'listen_port'),
    ({'listen_port': 70000}, 'listen_port'),
    ({'listen_port': '8470'}, 'listen_port'),
    ({'rate_limit_failures': 0}, 'rate_limit_failures'),
    ({'rate_limit_window': -1}, 'rate_limit_window'),
    ({'cache_seconds': True}, 'cache_seconds'),
    ({'tls_certfile': '/c.pem'}, 'tls_keyfile'),
    ({'tls_keyfile': '/k.pem'}, 'tls_certfile'),
    ({'prometheus_url': 'localhost:9090'}, 'prometheus_url'),
    ({'keys_file': ''}, 'keys_file'),
    ({'pgbackrest_stanza': '../x'}, 'pgbackrest_stanza'),
    ({'projects': {}}, 'projects'),
    ({'projects': [{'name': '../etc', 'team': 'default'}]}, 'projects[0].name'),
    ({'projects': [{'name': 'worb'}]}, 'projects[0].team'),
    ({'projects': [{'name': 'worb', 'team': 'a_b'}]}, 'projects[0].team'),
    ({'projects': [{'name': 'worb', 'team': 't', 'databases': []}]}, 'projects'),
    ({'projects': [{'name': 'worb', 'team': 't', 'databases': ['a/b']}]}, 'projects[0].databases'),
    ({'projects': [{'name': 'worb', 'team': 't', 'redis_instance': '..'}]}, 'projects[0].redis_instance'),
    ({'projects': [{'name': 'worb', 'team': 't', 'colour': 'red'}]}, 'projects'),
    ({'projects': [{'name': 'worb', 'team': 't'}, {'name': 'worb', 'team': 't'}]}, 'projects'),
])
def test_bad_values_are_refused_naming_the_key(raw, param):
    with pytest.raises(BackupError) as info:
        validate_config(raw)
    assert info.value.param == param


def test_unreadable_or_invalid_files_name_the_config(tmp_path):
    with pytest.raises(BackupError) as info:
        load_config(str(tmp_path / 'missing.json'))
    assert info.value.param == 'config' and 'missing.json' in info.value.msg
    bad = tmp_path / 'bad.json'
    bad.write_text('{"listen_port": ')
    with pytest.raises(BackupError) as info:
        load_config(str(bad))
    assert info.value.param == 'config' and 'not valid JSON' in info.value.msg
