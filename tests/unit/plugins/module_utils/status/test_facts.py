"""The status answers' pieces without servers: size and time formats, PromQL quoting and
RE2 escaping, the cache (with an injected clock), the merge of one job's metrics over
several hosts, and every way Prometheus can fail to answer (FactsUnavailable).

The protocol failures are played by a real HTTP server of the standard library on
127.0.0.1 (a test double of Prometheus for the protocol only; the facts themselves are
tested against a real Prometheus in tests/integration/test_status_facts.py)."""

from __future__ import annotations

import http.server
import json
import re
import threading
import urllib.parse

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.status import facts, listing, prometheus
from ansible_collections.codeb.backup.plugins.module_utils.status.errors import FactsUnavailable
from helpers.servers import free_port


# --------------------------------------------------------------------------- formats

@pytest.mark.parametrize('size,text', [
    (0, '0B'), (1, '1B'), (1023, '1023B'), (1024, '1KB'), (1536, '1.5KB'),
    (128 * 1024 ** 2, '128MB'), (1024 ** 2 - 1, '1MB'), (int(1.5 * 1024 ** 3), '1.5GB'),
    (3 * 1024 ** 4, '3TB'), (2048 * 1024 ** 4, '2048TB'), (10.0, '10B'),
    (1024 ** 3 + 1024 ** 2 * 100, '1.1GB'),
])
def test_human_size(size, text):
    assert facts.human_size(size) == text


@pytest.mark.parametrize('size', [None, -1, float('nan'), 'big', True])
def test_human_size_of_an_unknown_size_is_none(size):
    assert facts.human_size(size) is None


def test_epoch_time_is_utc_with_z_and_whole_seconds():
    assert listing.epoch_time(1767754800) == '2026-01-07T03:00:00Z'
    assert listing.epoch_time(1767754800.999) == '2026-01-07T03:00:00Z'
    assert listing.epoch_time(1.7677548e9) == '2026-01-07T03:00:00Z'


@pytest.mark.parametrize('value', [None, float('nan'), float('inf'), 0, -5, '1767754800', False])
def test_epoch_time_of_an_unknown_time_is_none(value):
    assert listing.epoch_time(value) is None


def test_stamp_time():
    assert listing.stamp_time('2026-01-07T10:30:00') == '2026-01-07T10:30:00Z'
    for bad in (None, '', '2026-01-07 10:30:00', '2026-01-07T10:30:00Z', 5):
        assert listing.stamp_time(bad) is None


# --------------------------------------------------------------------------- PromQL text

@pytest.mark.parametrize('value', ['worb', 'a.b', 'x+y*z?', 'we(ir)d|[set]{1}^$', 'back\\slash',
                                   'Shop-Data', 'db_1.v2'])
def test_regex_escape_matches_exactly_the_literal(value):
    pattern = re.compile(r'\A(?:%s)\Z' % prometheus.regex_escape(value))
    assert pattern.match(value)
    # '.' and friends lose their meaning: a look-alike does not match
    assert not pattern.match(value.replace('.', 'X')) or '.' not in value
    assert not pattern.match(value + 'x')


def test_regex_escape_escapes_the_dot_and_leaves_names_readable():
    assert prometheus.regex_escape('a.b') == r'a\.b'
    assert prometheus.regex_escape('Shop-Data_1') == 'Shop-Data_1'
    assert prometheus.alternatives(['b.c', 'a', 'a']) == r'a|b\.c'


def test_quote_escapes_backslashes_and_quotes():
    assert prometheus.quote('a"b') == r'"a\"b"'
    assert prometheus.quote(r'a\.b') == r'"a\\.b"'
    assert prometheus.quote('x\ny') == r'"x\ny"'


def test_env_target_pattern_matches_every_environment_of_the_project_only():
    pattern = re.compile(r'\A(?:%s)\Z' % facts.env_target_pattern('wo.rb'))
    assert pattern.match('wo.rb/production') and pattern.match('wo.rb/staging-2')
    for other in ('woXrb/production', 'wo.rb/', 'wo.rb/a/b', 'other/production', 'wo.rb/.x'):
        assert not pattern.match(other), other


def test_sample_value():
    assert prometheus.sample_value('156') == 156.0
    assert prometheus.sample_value('1.5e3') == 1500.0
    for missing in ('NaN', '+Inf', 'x', None):
        assert prometheus.sample_value(missing) is None


# --------------------------------------------------------------------------- a stand-in client

class CountingClient(object):
    """Answers every query with ``answers.get(expr, [])`` and records the queries."""

    def __init__(self, answers=None, fail=None):
        self.answers = answers or {}
        self.queries = []
        self.fail = fail

    def query(self, expr, at=None):
        self.queries.append((expr, at))
        if self.fail is not None:
            raise self.fail
        return self.answers.get(expr, [])


def _config(tmp_path, **extra):
    config = dict(prometheus_url='http://127.0.0.1:9', prometheus_timeout=5, cache_seconds=10,
                  pg_snapshot_dir=str(tmp_path / 'pg'), redis_backup_dir=str(tmp_path / 'redis'),
                  env_root=str(tmp_path / 'env'), pgbackrest_stanza='codeb')
    config.update(extra)
    return config


PROJECT = dict(name='worb', team='default', databases=['worb'], redis_instance='redis',
               env_project='worb')


class Clock(object):
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_answers_are_cached_per_tool_and_project_for_cache_seconds(tmp_path):
    client, clock = CountingClient(), Clock()
    status = facts.StatusFacts(_config(tmp_path), client=client, clock=lambda: 1.7e9,
                               monotonic=clock)
    first = status.backup_status(PROJECT)
    asked = len(client.queries)
    assert asked >= 1
    clock.now += 9.9
    assert status.backup_status(PROJECT) == first
    assert len(client.queries) == asked  # from the cache
    status.backup_list(PROJECT)  # another tool: its own entry
    after_list = len(client.queries)
    assert after_list > asked
    status.backup_status(dict(PROJECT, name='other', databases=['other'], env_project='other'))
    assert len(client.queries) > after_list  # another project: its own entry
    count = len(client.queries)
    clock.now += 0.1  # 10 s after the first answer: expired
    status.backup_status(PROJECT)
    assert len(client.queries) == count + asked


def test_a_cached_answer_cannot_be_changed_by_the_caller(tmp_path):
    status = facts.StatusFacts(_config(tmp_path), client=CountingClient(), monotonic=Clock())
    answer = status.backup_status(PROJECT)
    answer['postgresql']['lastSnapshot'] = 'changed'
    assert status.backup_status(PROJECT)['postgresql']['lastSnapshot'] is None


def test_cache_seconds_zero_asks_every_time(tmp_path):
    client = CountingClient()
    status = facts.StatusFacts(_config(tmp_path, cache_seconds=0), client=client, monotonic=Clock())
    status.backup_status(PROJECT)
    asked = len(client.queries)
    status.backup_status(PROJECT)
    assert len(client.queries) == 2 * asked


def test_a_failure_is_not_cached(tmp_path):
    client = CountingClient(fail=FactsUnavailable('down', param='prometheus_url'))
    status = facts.StatusFacts(_config(tmp_path), client=client, monotonic=Clock())
    with pytest.raises(FactsUnavailable):
        status.backup_status(PROJECT)
    client.fail = None
    assert status.backup_status(PROJECT)['env'] == dict(lastBackup=None, versions=0)


def test_concurrent_callers_get_whole_equal_answers(tmp_path):
    status = facts.StatusFacts(_config(tmp_path, cache_seconds=0), client=CountingClient())
    answers, errors = [], []

    def call():
        try:
            for _round in range(20):
                answers.append(status.backup_list(PROJECT))
        except Exception as exc:  # collected: the assertion below names it
            errors.append(exc)
    threads = [threading.Thread(target=call) for _thread in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(answers) == 160 and all(a == answers[0] for a in answers)


@pytest.mark.parametrize('value', [-1, 'ten', None, True])
def test_bad_cache_seconds_is_refused(tmp_path, value):
    with pytest.raises(BackupError) as caught:
        facts.StatusFacts(_config(tmp_path, cache_seconds=value), client=CountingClient())
    assert caught.value.param == 'cache_seconds'


@pytest.mark.parametrize('field,value', [('databases', ['../etc']), ('redis_instance', 'a/b'),
                                         ('env_project', '..')])
def test_bad_project_names_are_refused_before_any_query(tmp_path, field, value):
    client = CountingClient()
    status = facts.StatusFacts(_config(tmp_path), client=client)
    with pytest.raises(BackupError) as caught:
        status.backup_status(dict(PROJECT, **{field: value}))
    assert caught.value.param == field
    assert client.queries == []


def test_the_queries_quote_and_escape_the_names(tmp_path):
    client = CountingClient()
    project = dict(PROJECT, databases=['a.b'], redis_instance='r.1', env_project='e.v')
    facts.StatusFacts(_config(tmp_path), client=client).backup_status(project)
    text = '\n'.join(expr for expr, _at in client.queries)
    assert r'a\\.b' in text and r'e\\.v/' in text
    assert 'redis="r.1"' in text


# --------------------------------------------------------------------------- several hosts

def _job(name, kind, target, instance, value):
    return ({'__name__': 'codeb_backup_' + name, 'kind': kind, 'target': target,
             'instance': instance, 'job': 'node'}, value)


def test_one_jobs_metrics_over_several_hosts():
    """The newest success anywhere, its host's size; the newest attempt's status and
    duration; a target or kind not asked for is left out."""
    samples = [
        _job('last_success_timestamp_seconds', 'pg_snapshot', 'worb', 'db1', 100.0),
        _job('last_size_bytes', 'pg_snapshot', 'worb', 'db1', 10.0),
        _job('last_attempt_timestamp_seconds', 'pg_snapshot', 'worb', 'db1', 100.0),
        _job('last_status', 'pg_snapshot', 'worb', 'db1', 1.0),
        _job('last_success_timestamp_seconds', 'pg_snapshot', 'worb', 'db2', 50.0),
        _job('last_size_bytes', 'pg_snapshot', 'worb', 'db2', 20.0),
        _job('last_attempt_timestamp_seconds', 'pg_snapshot', 'worb', 'db2', 200.0),
        _job('last_status', 'pg_snapshot', 'worb', 'db2', 0.0),
        _job('last_duration_seconds', 'pg_snapshot', 'worb', 'db2', 3.5),
        _job('last_status', 'pg_snapshot', 'worbX', 'db1', 1.0),
        _job('last_status', 'redis_rdb', 'worb', 'db1', 1.0),
    ]

    class Answer(object):
        def query(self, expr, at=None):
            return samples
    status = facts.StatusFacts(dict(prometheus_url='http://127.0.0.1:9'), client=Answer())
    outcomes = status.job_outcomes({'pg_snapshot': ['worb']}, 1)
    expected = dict(success=100.0, size=10.0, attempt=200.0, status=0.0, duration=3.5)
    assert outcomes == {('pg_snapshot', 'worb'): expected}


def test_the_worst_drill_is_a_failure_then_the_oldest_success():
    ok_new = dict(status=1.0, success=300.0, attempt=300.0, duration=1.0, size=None)
    ok_old = dict(status=1.0, success=100.0, attempt=100.0, duration=2.0, size=None)
    failed = dict(status=0.0, success=200.0, attempt=400.0, duration=3.0, size=None)
    assert facts._worst_drill([]) is None
    assert facts._worst_drill([ok_new, ok_old])['durationSeconds'] == 2.0
    worst = facts._worst_drill([ok_new, failed, ok_old])
    assert worst == dict(status='failed', lastSuccess='1970-01-01T00:03:20Z',
                         lastAttempt='1970-01-01T00:06:40Z', durationSeconds=3.0)


# --------------------------------------------------------------------------- the protocol

class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the stdlib's name)
        self.server.requests.append(self.path)
        code, body = self.server.reply
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_prometheus():
    """A stdlib HTTP server on 127.0.0.1 that answers every GET with ``server.reply``."""
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    server.requests = []
    server.reply = (200, b'{}')
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = 'http://127.0.0.1:%d' % server.server_address[1]
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _ok(result, result_type='vector'):
    return json.dumps(dict(status='success', data=dict(resultType=result_type,
                                                       result=result))).encode()


def test_a_vector_answer_and_the_request_sent(fake_prometheus):
    fake_prometheus.reply = (200, _ok([{'metric': {'kind': 'env'}, 'value': [1.0, '42']},
                                       {'metric': {}, 'value': [1.0, 'NaN']}]))
    client = prometheus.PrometheusClient(fake_prometheus.url + '/', timeout=2)
    assert client.query('up{job="x"}', at=1767754800.5) == [({'kind': 'env'}, 42.0), ({}, None)]
    path = fake_prometheus.requests[-1]
    parsed = urllib.parse.urlsplit(path)
    assert parsed.path == '/api/v1/query'
    assert urllib.parse.parse_qs(parsed.query) == {'query': ['up{job="x"}'],
                                                   'time': ['1767754800.500']}


def test_a_scalar_answer(fake_prometheus):
    fake_prometheus.reply = (200, _ok([1.0, '7'], 'scalar'))
    assert prometheus.PrometheusClient(fake_prometheus.url).query('7') == [({}, 7.0)]


def test_the_proxy_environment_is_not_used(fake_prometheus, monkeypatch):
    refused = 'http://127.0.0.1:%d' % free_port()
    for name in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY'):
        monkeypatch.setenv(name, refused)
    monkeypatch.delenv('no_proxy', raising=False)
    monkeypatch.delenv('NO_PROXY', raising=False)
    fake_prometheus.reply = (200, _ok([]))
    assert prometheus.PrometheusClient(fake_prometheus.url).query('up') == []
    assert len(fake_prometheus.requests) == 1


@pytest.mark.parametrize('code,body,text', [
    (400, b'{"status":"error","errorType":"bad_data","error":"parse error at char 3"}',
     'bad_data: parse error at char 3'),
    (503, b'<html>overloaded</html>', 'HTTP 503'),
    (200, b'{"status":"error","error":"query timed out"}', 'query timed out'),
    (200, b'{"status": "succ', 'did not answer with JSON'),
    (200, b'not json at all', 'did not answer with JSON'),
    (200, b'[1, 2]', 'did not answer'),
    (200, b'{"status":"success","data":{"resultType":"matrix","result":[]}}', "'matrix'"),
    (200, b'{"status":"success","data":{"resultType":"vector","result":[{"value":[1]}]}}',
     'malformed sample'),
])
def test_error_answers_are_facts_unavailable(fake_prometheus, code, body, text):
    fake_prometheus.reply = (code, body)
    with pytest.raises(FactsUnavailable) as caught:
        prometheus.PrometheusClient(fake_prometheus.url).query('up')
    assert text in caught.value.msg
    assert caught.value.param == 'prometheus_url'


def test_a_refused_connection_is_facts_unavailable():
    client = prometheus.PrometheusClient('http://127.0.0.1:%d' % free_port(), timeout=2)
    with pytest.raises(FactsUnavailable) as caught:
        client.query('up')
    assert 'cannot be reached' in caught.value.msg
    assert isinstance(caught.value, BackupError)


def test_facts_unavailable_reaches_the_caller_of_a_tool(tmp_path):
    config = _config(tmp_path, prometheus_url='http://127.0.0.1:%d' % free_port(), cache_seconds=0)
    status = facts.StatusFacts(config)
    for tool in (status.backup_status, status.backup_list):
        with pytest.raises(FactsUnavailable):
            tool(PROJECT)


@pytest.mark.parametrize('url,timeout,param', [
    ('127.0.0.1:9090', 5, 'prometheus_url'), ('ftp://127.0.0.1', 5, 'prometheus_url'),
    (None, 5, 'prometheus_url'), ('http://', 5, 'prometheus_url'),
    ('http://127.0.0.1:9090', 0, 'prometheus_timeout'),
    ('http://127.0.0.1:9090', 'soon', 'prometheus_timeout'),
])
def test_bad_client_settings_name_their_key(url, timeout, param):
    with pytest.raises(BackupError) as caught:
        prometheus.PrometheusClient(url, timeout)
    assert caught.value.param == param


def test_a_burst_at_expiry_asks_prometheus_once(tmp_path):
    """While one caller computes an answer, a second caller of the same (tool, project)
    waits for it instead of asking again."""
    entered, release, second_looked = threading.Event(), threading.Event(), threading.Event()

    class SlowClient(CountingClient):
        def query(self, expr, at=None):
            entered.set()
            assert release.wait(60), 'the test never released the first caller'
            return super().query(expr, at)

    def monotonic():
        if threading.current_thread().name == 'second':
            second_looked.set()
        return 1000.0
    client = SlowClient()
    status = facts.StatusFacts(_config(tmp_path), client=client, monotonic=monotonic)
    answers = []
    first = threading.Thread(target=lambda: answers.append(status.backup_status(PROJECT)),
                             name='first')
    second = threading.Thread(target=lambda: answers.append(status.backup_status(PROJECT)),
                              name='second')
    first.start()
    assert entered.wait(60)
    second.start()
    assert second_looked.wait(60)  # it found no answer in the cache
    release.set()
    first.join()
    second.join()
    asked_once = len(client.queries)
    assert len(answers) == 2 and answers[0] == answers[1]
    status.cache_seconds = 0
    client.queries.clear()
    status.backup_status(PROJECT)
    assert asked_once == len(client.queries)  # one computation's queries, not two
