"""The status API over real HTTP: ``codeb-backup serve-api`` (uvicorn) under Debian's Python
(FastAPI 0.92, what the backup host runs) and under the venv's (FastAPI with pydantic 2),
answering from a real Prometheus over TSDB blocks of codeb_backup_* series and from a real
env store. Keys are managed with the host command while the server runs; schemathesis
fuzzes the server against its own /openapi.json.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from helpers.monitoring import Prometheus, openmetrics, tsdb_blocks
from helpers.servers import free_port, stop_process, wait_for
from helpers.sshd import cli_wrapper

STEP = 60
DEBIAN_PYTHON = '/usr/bin/python3'
PYTHONS = [pytest.param(DEBIAN_PYTHON, id='debian-fastapi'), pytest.param(sys.executable, id='venv-fastapi')]
SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), 'schemathesis')


def series(now):
    """(family, type, sample, labels, value) of the facts behind worb's answers."""
    db, bk = 'db1:9100', 'bk1:9100'
    out = []

    def job(kind, target, instance, success, size=None, status=1):
        labels = {'instance': instance, 'job': 'node', 'kind': kind, 'target': target}
        for name, value in (('last_success_timestamp_seconds', success),
                            ('last_attempt_timestamp_seconds', success), ('last_status', status),
                            ('last_duration_seconds', 12.5)) + ((('last_size_bytes', size),) if size else ()):
            out.append(('codeb_backup_' + name, 'gauge', 'codeb_backup_' + name, labels, value))
    job('pg_snapshot', 'worb', db, now - 7200, 10 << 20)
    job('redis_rdb', 'redis', db, now - 3600, 1 << 20)
    job('redis_aof', 'redis', db, now - 1800, 128 << 20)
    job('env', 'worb/production', db, now - 600, 300)
    job('drill_pg_snapshot', 'worb', bk, now - 900)
    job('pg_snapshot', 'billing', db, now - 100, 10)
    cluster = {'instance': db, 'job': 'node', 'cluster': '15/main'}
    out += [('codeb_backup_pg_archiver_archived', 'counter', 'codeb_backup_pg_archiver_archived_total', cluster, 156),
            ('codeb_backup_pg_in_recovery', 'gauge', 'codeb_backup_pg_in_recovery', cluster, 0)]
    out.append(('codeb_backup_redis_aof_enabled', 'gauge', 'codeb_backup_redis_aof_enabled',
                {'instance': db, 'job': 'node', 'redis': 'redis'}, 1))
    return out


@pytest.fixture(scope='module')
def world():
    """Prometheus with the series, an env store with two versions, a config and a key file."""
    base = tempfile.mkdtemp(prefix='codeb-test-status-api-')
    now = int(time.time()) // STEP * STEP
    # the samples run on for hours past now, so instant queries at "now" see them however
    # long the module takes (Prometheus looks back 5 minutes for a sample)
    prometheus = Prometheus(base, tsdb_blocks(base, openmetrics(series(now), now - 3600,
                                                                now + 6 * 3600, STEP)))
    prometheus.start()
    cli = cli_wrapper(os.path.join(base, 'codeb-backup-venv'))
    env_root = os.path.join(base, 'env-backup')
    for content in ('A=1\n', 'A=2\n'):
        src = os.path.join(base, 'app.env')
        with open(src, 'w') as handle:
            handle.write(content)
        run_cli(cli, 'env', 'backup', '--project', 'worb', '--src', src, '--root', env_root,
                '--metrics-dir', '')
    config = {
        'keys_file': os.path.join(base, 'keys.json'),
        'prometheus_url': prometheus.url, 'cache_seconds': 10,
        'pg_snapshot_dir': os.path.join(base, 'pg'), 'redis_backup_dir': os.path.join(base, 'redis'),
        'env_root': env_root,
        'projects': [{'name': 'worb', 'team': 'default', 'redis_instance': 'redis'},
                     {'name': 'billing', 'team': 'finance'}],
    }
    try:
        yield {'base': base, 'config': config, 'cli': cli, 'now': now}
    finally:
        prometheus.stop()
        shutil.rmtree(base, ignore_errors=True)


def run_cli(cli, *argv, ok=True):
    proc = subprocess.run([cli] + list(argv), capture_output=True, text=True, check=False)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


class ApiServer(object):
    """``codeb-backup serve-api`` under ``python`` on a free loopback port; stopped by PID."""

    def __init__(self, world, python, **overrides):
        self.port = free_port()
        name = 'api-%d' % self.port
        self.cli = cli_wrapper(os.path.join(world['base'], name + '-cli'), python=python)
        self.config_path = os.path.join(world['base'], name + '.json')
        self.config = dict(world['config'], listen_port=self.port,
                           log_file=os.path.join(world['base'], name + '.log'), **overrides)
        with open(self.config_path, 'w') as handle:
            json.dump(self.config, handle)
        self.output = open(os.path.join(world['base'], name + '.out'), 'w+')
        self.proc = subprocess.Popen([self.cli, 'serve-api', '--config', self.config_path],
                                     stdout=self.output, stderr=subprocess.STDOUT)
        wait_for(self._healthy, 60, 'the status API on port %d (see %s)' % (self.port, self.output.name))

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.port

    def _healthy(self):
        if self.proc.poll() is not None:
            self.output.seek(0)
            raise RuntimeError('serve-api exited with %s: %s' % (self.proc.returncode, self.output.read()))
        try:
            return self.get('/healthz') == (200, {'status': 'ok'})
        except OSError:
            return False

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return response.status, json.load(response)

    def tool(self, key, body, raw=None):
        data = raw if raw is not None else json.dumps(body).encode()
        headers = {'Content-Type': 'application/json'}
        if key is not None:
            headers['X-API-Key'] = key
        request = urllib.request.Request(self.url + '/api/tool', data=data, headers=headers, method='POST')
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.load(response), response.headers
        except urllib.error.HTTPError as error:
            return error.code, json.load(error), error.headers

    def stop(self):
        stop_process(self.proc)
        self.output.close()


@pytest.fixture(scope='module', params=PYTHONS)
def api(request, world):
    server = ApiServer(world, request.param)
    keys = dict((role, run_cli(server.cli, 'api-key', 'add', '--team', 'default', '--role', role,
                               '--keys-file', server.config['keys_file']))
                for role in ('viewer', 'admin'))
    keys['finance'] = run_cli(server.cli, 'api-key', 'add', '--team', 'finance', '--role', 'viewer',
                              '--keys-file', server.config['keys_file'])
    try:
        yield server, keys
    finally:
        server.stop()


def iso(seconds):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(seconds))


def test_backup_status_answers_the_facts_the_metrics_carry(api, world):
    server, keys = api
    status, body, _headers = server.tool(keys['viewer']['key'],
                                         {'tool': 'backup_status', 'params': {'project': 'worb'}})
    now = world['now']
    assert status == 200, body
    assert body == {
        'postgresql': {'lastSnapshot': iso(now - 7200), 'walArchived': 156, 'replicationLag': None},
        'redis': {'aofEnabled': True, 'lastRdbSave': iso(now - 3600), 'aofSize': '128MB'},
        'env': {'lastBackup': iso(now - 600), 'versions': 2}}
    # the host command prints the same JSON
    assert run_cli(server.cli, 'status', '--project', 'worb', '--config', server.config_path) == body


def test_backup_list_for_viewer_and_admin(api, world):
    server, keys = api
    status, body, _headers = server.tool(keys['viewer']['key'],
                                         {'tool': 'backup_list', 'params': {'project': 'worb'}})
    assert status == 200, body
    assert body['project'] == 'worb' and len(body['env']['versions']) == 2
    assert body['drills']['pg_snapshot']['status'] == 'ok' and body['drills']['redis'] is None
    assert run_cli(server.cli, 'status', '--project', 'worb', '--tool', 'backup_list',
                   '--config', server.config_path) == body
    status, everything, _headers = server.tool(keys['admin']['key'], {'tool': 'backup_list', 'params': {}})
    assert status == 200 and everything == {'projects': {'worb': body}}  # not finance's billing


def test_refusals_over_http(api):
    server, keys = api
    body = {'tool': 'backup_status', 'params': {'project': 'worb'}}
    for key in (None, 'codeb_default_viewer_nope', keys['viewer']['key'][:-1] + '*'):
        assert server.tool(key, body)[:2] == (401, {'detail': 'invalid or missing API key'})
    assert server.tool(keys['finance']['key'], body)[0] == 403
    assert server.tool(keys['viewer']['key'], {'tool': 'backup_list', 'params': {}})[0] == 403
    assert server.tool(keys['viewer']['key'], {'tool': 'backup_status', 'params': {'project': 'nope'}})[0] == 404
    status, answer, _headers = server.tool(keys['viewer']['key'], {'tool': 'drop', 'params': {'project': 'worb'}})
    assert status == 422 and 'backup_status' in json.dumps(answer) and 'backup_list' in json.dumps(answer)
    assert server.tool(keys['viewer']['key'], None, raw=b'{"tool"')[0] == 422
    assert server.tool(keys['viewer']['key'], {'tool': 'backup_status', 'params': {'project': '../etc'}})[0] == 422
    with open(server.config['log_file']) as handle:
        log = handle.read()
    assert keys['viewer']['key'] not in log and '"status": 403' in log


def test_keys_managed_by_the_host_command_take_effect_without_a_restart(api):
    server, _keys = api
    body = {'tool': 'backup_status', 'params': {'project': 'worb'}}
    added = run_cli(server.cli, 'api-key', 'add', '--team', 'default', '--role', 'viewer',
                    '--name', 'rotation', '--keys-file', server.config['keys_file'])
    assert server.tool(added['key'], body)[0] == 200
    run_cli(server.cli, 'api-key', 'revoke', '--id', added['id'], '--keys-file', server.config['keys_file'])
    assert server.tool(added['key'], body)[0] == 401
    assert server.proc.poll() is None


@pytest.mark.parametrize('python', PYTHONS)
def test_a_burst_of_bad_keys_gets_429_with_retry_after(world, python):
    server = ApiServer(world, python, rate_limit_failures=3, rate_limit_window=3600)
    try:
        body = {'tool': 'backup_status', 'params': {'project': 'worb'}}
        assert [server.tool('bad', body)[0] for attempt in range(3)] == [401, 401, 401]
        status, answer, headers = server.tool('bad', body)
        assert status == 429 and 1 <= int(headers['Retry-After']) <= 3600, answer
    finally:
        server.stop()


@pytest.mark.parametrize('python', PYTHONS)
def test_schemathesis_finds_nothing_against_the_servers_own_schema(world, python):
    server = ApiServer(world, python, rate_limit_failures=1000000)
    try:
        key = run_cli(server.cli, 'api-key', 'add', '--team', 'default', '--role', 'admin',
                      '--keys-file', server.config['keys_file'])['key']
        config = os.path.join(world['base'], 'schemathesis-%d.toml' % server.port)
        report = os.path.join(world['base'], 'schemathesis-%d.json' % server.port)
        with open(config, 'w') as handle:
            # the key reaches schemathesis through its environment, never its command line
            handle.write('headers = { "X-API-Key" = "${CODEB_STATUS_API_KEY}" }\n')
        proc = subprocess.run(
            [SCHEMATHESIS, '--config-file', config, 'run', server.url + '/openapi.json',
             '--checks', 'all', '--max-examples', '200', '--workers', '1', '--no-color',
             '--seed', '15', '--generation-database', 'none', '--report', 'json',
             '--report-json-path', report],
            capture_output=True, text=True, check=False, cwd=world['base'],
            env=dict(os.environ, CODEB_STATUS_API_KEY=key))
        assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
        with open(report) as handle:
            summary = json.load(handle)
        assert summary['complete'] and summary['operations']['tested'] == 2, summary
        with open(server.config['log_file']) as handle:
            requests = [json.loads(line) for line in handle]
        statuses = set(r['status'] for r in requests)
        # every request schemathesis sent is in the server's log: at least 200 examples of
        # the operation, good answers among them, and the ignored-auth check's unkeyed
        # requests refused
        assert len(requests) >= 200 and 200 in statuses and 401 in statuses, statuses
        assert not [s for s in statuses if s >= 500], statuses
    finally:
        server.stop()
