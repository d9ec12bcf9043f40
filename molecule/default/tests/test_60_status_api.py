"""The status API as the status_api role runs it on the backup host (codeb-status-api.service,
user codeb-api, CAP_DAC_READ_SEARCH only), called from the app host over the scenario's
network with keys made by `codeb-backup api-key add`: the answer for a real project agrees
with what Prometheus holds and with `codeb-backup status`; the refusals (401/403/404/422);
schemathesis from the control node against the service's own schema; and a service left on
an old core is restarted by the next run of the role."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys

import pytest

from conftest import _quote, cron_job, failure, run_playbook, sql, task_results, wait_for
from test_50_monitoring import collect, query

SERVICE = 'codeb-status-api'
URL = 'http://backup:8470'
ADDRESS = 'http://10.89.77.12:8470'  # the backup container, as the control node reaches it
CLI = '/usr/local/bin/codeb-backup'
ENV_ROOT = '/opt/codeb/env-backup'
# POST from the app host with the standard library (the key travels in a file, never argv).
POST = ('python3 -c "import json, sys, urllib.error, urllib.request\n'
        'key = open(sys.argv[2]).read().strip() if sys.argv[2] != \'-\' else None\n'
        'headers = {\'Content-Type\': \'application/json\'}\n'
        'if key: headers[\'X-API-Key\'] = key\n'
        'request = urllib.request.Request(sys.argv[1], sys.argv[3].encode(), headers)\n'
        'try:\n'
        '    response = urllib.request.urlopen(request, timeout=30)\n'
        'except urllib.error.HTTPError as exc:\n'
        '    response = exc\n'
        'print(json.dumps({\'status\': response.status, \'body\': json.loads(response.read())}))" '
        '%s %s %s')


@pytest.fixture(scope='module')
def keys(backup, app):
    """A viewer and an admin key of team worb and a viewer key of team codeb, made on the
    backup host and handed to the app host in 0600 files."""
    made = {}
    for name, team, role in (('viewer', 'worb', 'viewer'), ('admin', 'worb', 'admin'),
                             ('other', 'codeb', 'viewer')):
        out = json.loads(backup.check_output('%s api-key add --team %s --role %s --name molecule-%s'
                                             % (CLI, team, role, name)))
        path = '/root/status-api-%s.key' % name
        app.check_output('umask 077 && printf %%s %s > %s' % (_quote(out['key']), path))
        made[name] = {'key': out['key'], 'id': out['id'], 'path': path}
    yield made
    for entry in made.values():
        backup.check_output('%s api-key revoke --id %s' % (CLI, entry['id']))
        app.check_output('rm -f %s' % entry['path'])


def call(app, key_path, body, raw=None):
    """(status, body) of POST /api/tool from the app host."""
    out = app.check_output(POST % (_quote(URL + '/api/tool'), key_path or '-',
                                   _quote(raw if raw is not None else json.dumps(body))))
    answer = json.loads(out)
    return answer['status'], answer['body']


def status_of(project):
    return {'tool': 'backup_status', 'params': {'project': project}}


def iso(seconds):
    if not seconds:
        return None
    return datetime.datetime.fromtimestamp(float(seconds), datetime.timezone.utc) \
        .strftime('%Y-%m-%dT%H:%M:%SZ')


def one_value(backup, expr):
    result = query(backup, expr)
    return float(result[0]['value'][1]) if result else None


def test_service_runs_hardened_as_its_own_user(backup):
    service = backup.service(SERVICE)
    assert service.is_running and service.is_enabled
    show = dict(line.split('=', 1) for line in backup.check_output(
        'systemctl show %s --property User,NoNewPrivileges,AmbientCapabilities,ProtectSystem,MainPID'
        % SERVICE).splitlines())
    assert show['User'] == 'codeb-api' and show['NoNewPrivileges'] == 'yes'
    assert show['AmbientCapabilities'] == 'cap_dac_read_search' and show['ProtectSystem'] == 'strict'
    assert backup.check_output('stat -c %%U /proc/%s' % show['MainPID']) == 'codeb-api'
    keys_file = backup.file('/etc/codeb-backup/status-api-keys.json')
    assert keys_file.user == 'root' and keys_file.mode == 0o600


def test_backup_status_of_a_real_project_agrees_with_prometheus_and_the_host_command(
        storage, backup, app, keys):
    # fresh facts of every kind: a pg_snapshot of worb and a Redis RDB+AOF snapshot on
    # storage (their cron commands), two env versions in the backup host's store. The
    # scenario's cluster has no database worb: the project's database, with some rows.
    if sql(storage, "SELECT count(*) FROM pg_database WHERE datname = 'worb'") == '0':
        sql(storage, 'CREATE DATABASE worb')
    sql(storage, 'CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY, note text); '
                 "INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 100) g "
                 'ON CONFLICT DO NOTHING', database='worb')
    storage.check_output(cron_job(storage, '/etc/cron.d/codeb-pg-snapshot', '--state present --database worb '))
    storage.check_output(cron_job(storage, '/etc/cron.d/codeb-redis-backup', 'redis-snapshot'))
    for value in ('one', 'two'):
        backup.check_output('printf "APP_KEY=%s\\n" > /root/worb.env && %s env backup --project worb '
                            '--environment production --src /root/worb.env --root %s --trigger manual'
                            % (value, CLI, ENV_ROOT))
    versions = len(json.loads(backup.check_output(
        'cat %s/worb/production/backup-log.json' % ENV_ROOT))['versions'])
    collect(storage)
    collect(backup)

    def job(kind, target):
        return one_value(backup, 'codeb_backup_last_success_timestamp_seconds{kind="%s",target="%s"}'
                         % (kind, target))

    wait_for('Prometheus to hold the new snapshot and env runs',
             lambda: job('pg_snapshot', 'worb') and job('redis_rdb', 'redis')
             and job('env', 'worb/production'))
    archived = 'max(codeb_backup_pg_archiver_archived_total and on(instance, cluster) ' \
               'codeb_backup_pg_in_recovery == 0)'
    before = one_value(backup, archived)
    status, answer = call(app, keys['viewer']['path'], status_of('worb'))
    after = one_value(backup, archived)
    assert status == 200, answer
    assert answer['postgresql']['lastSnapshot'] == iso(job('pg_snapshot', 'worb'))
    assert before <= answer['postgresql']['walArchived'] <= after and before > 0
    assert answer['redis']['aofEnabled'] is (one_value(backup, 'codeb_backup_redis_aof_enabled{redis="redis"}') == 1)
    assert answer['redis']['lastRdbSave'] == iso(job('redis_rdb', 'redis'))
    assert answer['redis']['aofSize'] and answer['redis']['aofSize'][-1] == 'B'
    assert answer['env'] == {'lastBackup': iso(job('env', 'worb/production')), 'versions': versions}
    assert versions >= 2

    on_host = json.loads(backup.check_output('%s status --project worb' % CLI))
    answer['postgresql'].pop('walArchived')
    on_host['postgresql'].pop('walArchived')
    assert on_host == answer


def test_backup_list_for_viewer_and_admin(app, keys):
    status, listed = call(app, keys['viewer']['path'], {'tool': 'backup_list', 'params': {'project': 'worb'}})
    assert status == 200 and listed['project'] == 'worb', listed
    assert listed['postgresql']['pgbackrest']['stanza'] == 'codeb'
    assert listed['postgresql']['pgbackrest']['backups'] >= 1
    assert listed['redis']['snapshots'] and all(len(s['sha256']) == 64 for s in listed['redis']['snapshots'])
    assert len(listed['env']['versions']) >= 2
    status, body = call(app, keys['viewer']['path'], {'tool': 'backup_list', 'params': {}})
    assert status == 403 and 'admin' in body['detail'], body
    status, everything = call(app, keys['admin']['path'], {'tool': 'backup_list', 'params': {}})
    assert status == 200 and sorted(everything['projects']) == ['worb'], everything


def test_refusals(app, keys):
    unauthorized = {'detail': 'invalid or missing API key'}
    bad = '/root/status-api-bad.key'
    app.check_output('umask 077 && printf %%s %s > %s' % (_quote(keys['viewer']['key'][:-1] + '*'), bad))
    assert call(app, None, status_of('worb')) == (401, unauthorized)
    assert call(app, bad, status_of('worb')) == (401, unauthorized)
    status, body = call(app, keys['other']['path'], status_of('worb'))
    assert status == 403 and 'worb' in body['detail'], body
    status, body = call(app, keys['viewer']['path'], status_of('nosuchproject'))
    assert status == 404 and 'nosuchproject' in body['detail'], body
    status, body = call(app, keys['viewer']['path'], {'tool': 'drop_tables', 'params': {}})
    assert status == 422 and 'backup_status' in json.dumps(body) and 'backup_list' in json.dumps(body)
    status, body = call(app, keys['viewer']['path'], None, raw='{not json')
    assert status == 422, body


def test_schemathesis_finds_nothing_against_the_service(backup, keys, tmp_path):
    schemathesis = os.path.join(os.path.dirname(sys.executable), 'schemathesis')
    config = tmp_path / 'schemathesis.toml'
    report = tmp_path / 'schemathesis.json'
    # the key reaches schemathesis through its environment, never its command line
    config.write_text('headers = { "X-API-Key" = "${CODEB_STATUS_API_KEY}" }\n')
    since = backup.check_output('date +%s')
    proc = subprocess.run(
        [schemathesis, '--config-file', str(config), 'run', ADDRESS + '/openapi.json',
         '--checks', 'all', '--max-examples', '200', '--workers', '1', '--no-color',
         '--seed', '60', '--generation-database', 'none', '--report', 'json',
         '--report-json-path', str(report)],
        capture_output=True, text=True, check=False, cwd=str(tmp_path),
        env=dict(os.environ, CODEB_STATUS_API_KEY=keys['admin']['key']))
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    summary = json.loads(report.read_text())
    assert summary['complete'] and summary['operations']['tested'] == 2, summary
    # the service's request log (the journal) saw them, and never a key
    log = backup.check_output('journalctl -u %s --since @%s -o cat' % (SERVICE, since))
    requests = [json.loads(line) for line in log.splitlines() if line.startswith('{')]
    statuses = {r['status'] for r in requests}
    assert len(requests) >= 200 and 200 in statuses and 401 in statuses, statuses
    assert not [s for s in statuses if s >= 500], statuses
    assert keys['admin']['key'] not in log


def _started(backup):
    return backup.check_output('systemctl show --property ExecMainStartTimestamp --value '
                               '--timestamp=unix %s' % SERVICE)


def test_a_service_left_on_an_old_core_is_restarted_by_the_next_run(backup):
    stamp = '/usr/local/lib/codeb-backup/core.sha256'
    before = _started(backup)
    play = os.path.join(os.path.dirname(__file__), 'status-api-play.yml')
    rc, out, err = run_playbook(play, {})
    assert rc == 0 and out['stats']['backup']['changed'] == 0, (failure(out), err[-2000:])
    assert _started(backup) == before
    # What an earlier play or a run that died before its handlers leaves: a core installed
    # after the running process started (host_cli rewrites the stamp only for a new core).
    backup.check_output('touch %s' % stamp)
    rc, out, err = run_playbook(play, {})
    assert rc == 0, (failure(out), err[-2000:])
    changed = [name for name, result in task_results(out, 'backup') if result.get('changed')]
    assert changed == ['codeb.backup.status_api : Restart the service on the installed core'], changed
    assert _started(backup) != before
    assert backup.service(SERVICE).is_running
    rc, out, err = run_playbook(play, {})
    assert rc == 0 and out['stats']['backup']['changed'] == 0, (failure(out), err[-2000:])
