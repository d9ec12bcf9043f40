"""The status API app with FastAPI's TestClient: bodies of both tools, every status code,
the rate limit on an injected clock, and the request log. The facts are a test object that
answers in the contract's shapes (the real facts have their own tests against Prometheus)."""

from __future__ import annotations

import io
import json

import pytest

pytest.importorskip('fastapi')
from fastapi.testclient import TestClient  # noqa: E402

from ansible_collections.codeb.backup.plugins.module_utils.status import app as app_mod  # noqa: E402
from ansible_collections.codeb.backup.plugins.module_utils.status.config import validate_config  # noqa: E402
from ansible_collections.codeb.backup.plugins.module_utils.status.errors import FactsUnavailable  # noqa: E402
from ansible_collections.codeb.backup.plugins.module_utils.status.keys import KeyStore  # noqa: E402

STATUS = {'postgresql': {'lastSnapshot': '2026-01-07T03:00:00Z', 'walArchived': 156,
                         'replicationLag': '0 bytes'},
          'redis': {'aofEnabled': True, 'lastRdbSave': '2026-01-07T03:05:00Z', 'aofSize': '128MB'},
          'env': {'lastBackup': None, 'versions': 5}}
DRILL = {'status': 'ok', 'lastSuccess': '2026-01-07T04:00:00Z',
         'lastAttempt': '2026-01-07T04:00:00Z', 'durationSeconds': 12.5}


def listing(name):
    return {'project': name,
            'postgresql': {'snapshots': [{'database': name, 'file': name + '-2026-01-07T03:00:00.dump',
                                          'time': '2026-01-07T03:00:00Z', 'sha256': 'a' * 64,
                                          'sizeBytes': 1024, 'status': 'ok'}],
                           'pgbackrest': {'stanza': 'codeb', 'lastFull': '2026-01-05T01:00:00Z',
                                          'lastDiff': None, 'lastIncr': None, 'backups': 1}},
            'redis': {'instance': None, 'snapshots': []},
            'env': {'versions': [{'environment': 'production', 'version': '2026-01-07T10:30:00',
                                  'time': '2026-01-07T10:30:00Z', 'sha256': 'b' * 64,
                                  'sizeBytes': 10, 'trigger': 'set'}]},
            'drills': {'pgbackrest': DRILL, 'pg_snapshot': None, 'redis': None, 'env': DRILL}}


class AnsweringFacts(object):
    def __init__(self):
        self.asked = []

    def backup_status(self, project):
        self.asked.append(('backup_status', project['name']))
        return STATUS

    def backup_list(self, project):
        self.asked.append(('backup_list', project['name']))
        return listing(project['name'])


class UnreachableFacts(object):
    def backup_status(self, project):
        raise FactsUnavailable('Prometheus at http://127.0.0.1:1 did not answer: refused')

    backup_list = backup_status


class Clock(object):
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def env(tmp_path):
    config = validate_config({
        'keys_file': str(tmp_path / 'keys.json'), 'rate_limit_failures': 3, 'rate_limit_window': 60,
        'projects': [{'name': 'worb', 'team': 'default'}, {'name': 'shop', 'team': 'default'},
                     {'name': 'billing', 'team': 'finance'}]})
    store = KeyStore(config['keys_file'])

    class Env(object):
        pass
    e = Env()
    e.config, e.store, e.facts, e.clock, e.log = config, store, AnsweringFacts(), Clock(), io.StringIO()
    e.viewer = store.add('default', 'viewer')
    e.admin = store.add('default', 'admin')
    e.finance = store.add('finance', 'viewer')
    e.client = TestClient(app_mod.create_app(config, facts=e.facts, clock=e.clock, log_stream=e.log))
    return e


def call(env, key, body):
    headers = {} if key is None else {'X-API-Key': key}
    if isinstance(body, (bytes, str)):
        headers['Content-Type'] = 'application/json'
        return env.client.post('/api/tool', content=body, headers=headers)
    return env.client.post('/api/tool', json=body, headers=headers)


def log_lines(env):
    return [json.loads(line) for line in env.log.getvalue().splitlines()]


def test_healthz_needs_no_key(env):
    response = env.client.get('/healthz')
    assert response.status_code == 200 and response.json() == {'status': 'ok'}


def test_backup_status_is_exactly_the_design_shape(env):
    response = call(env, env.viewer['key'], {'tool': 'backup_status', 'params': {'project': 'worb'}})
    assert response.status_code == 200
    assert response.json() == STATUS
    assert env.facts.asked == [('backup_status', 'worb')]


def test_backup_list_for_a_viewer(env):
    response = call(env, env.viewer['key'], {'tool': 'backup_list', 'params': {'project': 'worb'}})
    assert response.status_code == 200 and response.json() == listing('worb')


def test_admin_lists_every_project_of_its_team_only(env):
    for body in ({'tool': 'backup_list', 'params': {}}, {'tool': 'backup_list'}):
        response = call(env, env.admin['key'], body)
        assert response.status_code == 200
        assert response.json() == {'projects': {'shop': listing('shop'), 'worb': listing('worb')}}


def test_facts_not_in_the_contract_shape_are_a_server_error_not_an_answer(env):
    env.facts.backup_status = lambda project: dict(STATUS, extra={'x': 1})
    client = TestClient(env.client.app, raise_server_exceptions=False)
    response = client.post('/api/tool', json={'tool': 'backup_status', 'params': {'project': 'worb'}},
                           headers={'X-API-Key': env.viewer['key']})
    assert response.status_code == 500


def wrong_keys(env):
    token = env.viewer['key'].split('_', 3)[3]
    revoked = env.store.add('default', 'viewer')
    env.store.revoke(revoked['id'])
    return {'missing': None, 'empty': '', 'malformed': 'hello', 'revoked': revoked['key'],
            'unknown': 'codeb_default_viewer_' + 'x' * 43,
            'team part wrong': 'codeb_finance_viewer_' + token,
            'role part wrong': 'codeb_default_admin_' + token,
            'token part wrong': env.viewer['key'][:-2] + 'zz'}


def test_every_wrong_key_gets_the_same_401(env):
    body = {'tool': 'backup_status', 'params': {'project': 'worb'}}
    answers = set()
    for what, key in wrong_keys(env).items():
        env.clock.now += 3600  # keep the rate limit out of this test
        response = call(env, key, body)
        assert response.status_code == 401, what
        headers = tuple(sorted((k, v) for k, v in response.headers.items() if k != 'date'))
        answers.add((response.content, headers))
    assert len(answers) == 1
    assert json.loads(answers.pop()[0]) == {'detail': 'invalid or missing API key'}
    assert env.facts.asked == []


def test_a_bad_key_is_401_before_the_body_is_looked_at(env):
    for body in (b'{not json', {'tool': 'nope'}, {'tool': 'backup_status', 'params': {'project': '../x'}}):
        env.clock.now += 3600
        assert call(env, 'codeb_default_viewer_wrong', body).status_code == 401


def test_401_path_is_the_same_whatever_part_of_the_key_is_wrong(env, monkeypatch):
    from ansible_collections.codeb.backup.plugins.module_utils.status import keys as keys_mod
    calls = []
    real_compare = keys_mod.hmac.compare_digest

    def recording(a, b):
        calls.append(b)
        return real_compare(a, b)
    monkeypatch.setattr(keys_mod.hmac, 'compare_digest', recording)
    sequences = []
    for key in wrong_keys(env).values():
        env.clock.now += 3600
        del calls[:]
        assert call(env, key, {'tool': 'backup_status', 'params': {'project': 'worb'}}).status_code == 401
        sequences.append(list(calls))
    assert len(sequences[0]) == 3  # viewer, admin, finance: the revoked one is not active
    assert all(sequence == sequences[0] for sequence in sequences)


def test_403_for_another_teams_project_and_for_a_viewer_listing_everything(env):
    response = call(env, env.finance['key'], {'tool': 'backup_status', 'params': {'project': 'worb'}})
    assert response.status_code == 403 and 'another team' in response.json()['detail']
    response = call(env, env.admin['key'], {'tool': 'backup_list', 'params': {'project': 'billing'}})
    assert response.status_code == 403
    response = call(env, env.viewer['key'], {'tool': 'backup_list', 'params': {}})
    assert response.status_code == 403 and 'admin' in response.json()['detail']
    assert env.facts.asked == []


def test_404_for_an_unknown_project(env):
    response = call(env, env.viewer['key'], {'tool': 'backup_status', 'params': {'project': 'nope'}})
    assert response.status_code == 404 and response.json() == {'detail': "unknown project 'nope'"}


@pytest.mark.parametrize('body, needle', [
    (b'{"tool": ', None),
    (b'[]', None),
    ({'tool': 'rm_rf', 'params': {'project': 'worb'}}, "'backup_status'"),
    ({'params': {'project': 'worb'}}, 'tool'),
    ({'tool': 'backup_status', 'params': {'project': '../../etc'}}, 'project'),
    ({'tool': 'backup_status', 'params': {'project': '.hidden'}}, 'project'),
    ({'tool': 'backup_status', 'params': {'project': 'a' * 64}}, 'project'),
    ({'tool': 'backup_status', 'params': {}}, 'project'),
    ({'tool': 'backup_status', 'params': {'project': 'worb', 'x': 1}}, 'x'),
    ({'tool': 'backup_status', 'params': {'project': 'worb'}, 'extra': 1}, 'extra'),
])
def test_422_for_bad_bodies_names_what_is_wrong(env, body, needle):
    response = call(env, env.admin['key'], body)
    assert response.status_code == 422
    text = json.dumps(response.json())
    if needle:
        assert needle in text
    if body == {'tool': 'rm_rf', 'params': {'project': 'worb'}}:
        assert "'backup_list'" in text
    assert env.facts.asked == []


def test_503_when_the_facts_cannot_answer(env):
    app = app_mod.create_app(env.config, facts=UnreachableFacts(), log_stream=io.StringIO())
    response = TestClient(app).post('/api/tool', json={'tool': 'backup_status', 'params': {'project': 'worb'}},
                                    headers={'X-API-Key': env.viewer['key']})
    assert response.status_code == 503 and 'Prometheus' in response.json()['detail']


def test_429_after_a_burst_of_failures_then_recovery_after_the_window(env):
    body = {'tool': 'backup_status', 'params': {'project': 'worb'}}
    for attempt in range(3):
        assert call(env, 'bad', body).status_code == 401
        env.clock.now += 1
    blocked = call(env, env.viewer['key'], body)  # even a good key, from this address
    assert blocked.status_code == 429
    assert blocked.headers['Retry-After'] == '57'  # the first failure (t=0) leaves at t=60
    assert env.facts.asked == []
    env.clock.now += 56
    assert call(env, env.viewer['key'], body).status_code == 429
    env.clock.now += 1  # the first failure leaves the window
    assert call(env, env.viewer['key'], body).status_code == 200


def test_successes_do_not_count_and_failures_below_the_limit_do_not_block(env):
    body = {'tool': 'backup_status', 'params': {'project': 'worb'}}
    for attempt in range(2):
        assert call(env, 'bad', body).status_code == 401
    for attempt in range(5):
        assert call(env, env.viewer['key'], body).status_code == 200


def test_keys_added_and_revoked_take_effect_without_a_new_app(env):
    body = {'tool': 'backup_status', 'params': {'project': 'worb'}}
    fresh = env.store.add('default', 'viewer')
    assert call(env, fresh['key'], body).status_code == 200
    env.store.revoke(fresh['id'])
    assert call(env, fresh['key'], body).status_code == 401


def test_one_log_line_per_request_with_the_fields_and_never_the_key(env):
    body = {'tool': 'backup_status', 'params': {'project': 'worb'}}
    call(env, env.viewer['key'], body)
    # '*' is outside the token's alphabet: always a wrong key (a random last character
    # could be the right one)
    call(env, env.viewer['key'][:-1] + '*', body)
    call(env, env.finance['key'], {'tool': 'backup_list', 'params': {'project': 'worb'}})
    env.client.get('/healthz')
    lines = log_lines(env)
    assert len(lines) == 3
    for line in lines:
        assert set(line) == {'time', 'client', 'team', 'role', 'tool', 'project', 'status',
                             'durationSeconds'}
        assert line['time'].endswith('Z') and line['durationSeconds'] >= 0
    assert lines[0]['team'] == 'default' and lines[0]['role'] == 'viewer'
    assert (lines[0]['tool'], lines[0]['project'], lines[0]['status']) == ('backup_status', 'worb', 200)
    assert lines[1]['status'] == 401 and lines[1]['team'] is None
    assert (lines[2]['team'], lines[2]['status'], lines[2]['tool']) == ('finance', 403, 'backup_list')
    text = env.log.getvalue()
    for key in (env.viewer['key'], env.finance['key']):
        assert key not in text and key.split('_', 3)[3] not in text


def test_the_log_file_gets_the_same_lines(env, tmp_path):
    config = dict(env.config, log_file=str(tmp_path / 'requests.log'))
    stream = io.StringIO()
    client = TestClient(app_mod.create_app(config, facts=env.facts, log_stream=stream))
    client.post('/api/tool', json={'tool': 'backup_status', 'params': {'project': 'worb'}},
                headers={'X-API-Key': env.viewer['key']})
    assert open(config['log_file']).read() == stream.getvalue() != ''


def test_openapi_documents_every_status_and_the_key_header(env):
    schema = env.client.get('/openapi.json').json()
    operation = schema['paths']['/api/tool']['post']
    assert set(operation['responses']) == {'200', '400', '401', '403', '404', '422', '429', '503'}
    assert operation['security'] == [{'APIKeyHeader': []}]
    assert schema['components']['securitySchemes']['APIKeyHeader'] == {
        'type': 'apiKey', 'in': 'header', 'name': 'X-API-Key', 'description': 'codeb_{team}_{role}_{token}'}
    status = schema['components']['schemas']['BackupStatus']
    assert status['additionalProperties'] is False
    assert set(schema['components']['schemas']['PostgresStatus']['required']) == {
        'lastSnapshot', 'walArchived', 'replicationLag'}


def test_answer_refuses_an_unknown_tool_naming_the_allowed_ones(env):
    from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
    with pytest.raises(BackupError) as info:
        app_mod.answer(env.facts, env.config, 'drop', 'worb')
    assert info.value.param == 'tool' and 'backup_status, backup_list' in info.value.msg


def test_an_unwritable_log_file_does_not_fail_the_request(env, tmp_path, capsys):
    config = dict(env.config, log_file=str(tmp_path / 'no-such-dir' / 'requests.log'))
    stream = io.StringIO()
    client = TestClient(app_mod.create_app(config, facts=env.facts, log_stream=stream))
    response = client.post('/api/tool', json={'tool': 'backup_status', 'params': {'project': 'worb'}},
                           headers={'X-API-Key': env.viewer['key']})
    assert response.status_code == 200 and stream.getvalue()
    assert 'cannot append to the request log' in capsys.readouterr().err
