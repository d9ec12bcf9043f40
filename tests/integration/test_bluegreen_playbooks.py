"""deploy.yml and rollback.yml end to end: the bluegreen role on a real nginx, two real HTTP
apps (blue and green answer the version deployed into them), the throwaway PostgreSQL."""

from __future__ import annotations

import os
import sys

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import durable
from ansible_collections.codeb.backup.plugins.module_utils.bluegreen import traffic
from helpers.ansible_runner import run_playbook
from helpers.bluegreen import DEPLOY, ROLLBACK, Site, changed_tasks, failure, http_get


@pytest.fixture
def site(pg_cluster, request):
    project = 'bg%s' % request.node.name.replace('test_', '')[:20].replace('_', '')
    site = Site(pg_cluster, project)
    try:
        site.start(check_idempotent='roll_forward' in request.node.name)
        yield site
    finally:
        site.stop()


def test_deploy_rollback_with_db_roll_forward_and_without_db(site):
    # the role's second run changed nothing (checked in Site.start)
    site.deploy('v1')
    assert http_get(site.port) == 'v1'
    site.redis.client().set('mode', 'one')
    v1_rows = site.rows()
    assert v1_rows == '1|one\n2|two'
    site.deploy('v2')
    assert http_get(site.port) == 'v2'
    assert site.rows() == '1|ONE|5\n2|TWO|5\n3|THREE|7'
    state = site.state()
    assert state['activeSlot'] == 'green' and state['blue']['state'] == 'grace'
    v1_snapshot = state['blue']['dbSnapshot']
    assert v1_snapshot in site.backups()
    assert state['blue']['redisSnapshot'].startswith('dump-')
    # v2 writes more data while live
    site.pg.psql("INSERT INTO items VALUES (4, 'FOUR', 9)", database=site.database)
    site.redis.client().set('mode', 'two')
    v2_rows = site.rows()

    assert site.env() == 'MODE=v2\n'
    rc, out, err = site.play(ROLLBACK, restore_db=True, restore_env=True, restore_redis=True,
                             deployed_by='oncall')
    assert rc == 0, failure(out, err)
    assert http_get(site.port) == 'v1'
    assert site.rows() == v1_rows           # the database equals v1's snapshot
    assert site.redis.client().get('mode') == b'one'
    assert site.env() == 'MODE=v1\n'        # and the .env is the one v1 ran with
    state = site.state()
    assert state['activeSlot'] == 'blue' and state['green']['state'] == 'rolled_back'
    safety = state['green']['dbSnapshot']
    assert safety != v1_snapshot and safety in site.backups()
    assert state['history'][-1]['by'] == 'oncall'

    # a second rollback returns to v2, with v2's data from the safety snapshot
    rc, out, err = site.play(ROLLBACK, restore_db=True, restore_env=True, restore_redis=True)
    assert rc == 0, failure(out, err)
    assert http_get(site.port) == 'v2'
    assert site.rows() == v2_rows
    assert site.env() == 'MODE=v2\n'
    assert site.redis.client().get('mode') == b'two'
    assert site.state()['history'][-1]['restored'] == ['db', 'env', 'redis']
    assert site.state()['activeSlot'] == 'green'
    prom = os.path.join(site.vars['bluegreen_metrics_dir'],
                        'codeb_backup_bluegreen_rollback_%s.prom' % site.project)
    with open(prom) as handle:
        assert 'codeb_backup_last_status{kind="bluegreen_rollback",target="%s"} 1' % site.project \
            in handle.read()

    # a rollback without restore_db switches traffic and leaves the database as it is
    backups = site.backups()
    rc, out, err = site.play(ROLLBACK, to_version='v1')
    assert rc == 0, failure(out, err)
    assert http_get(site.port) == 'v1'
    assert site.rows() == v2_rows
    assert site.env() == 'MODE=v2\n'
    assert site.backups() == backups        # no safety snapshot without restore_db
    # with to_version, running it again changes nothing
    state = site.state()
    rc, out, err = site.play(ROLLBACK, to_version='v1')
    assert rc == 0, failure(out, err)
    assert out['stats']['localhost']['changed'] == 0, changed_tasks(out)
    assert site.state() == state
    assert http_get(site.port) == 'v1'


def _refused(site, playbook, words, http='v2', check_env=True, **extra):
    """Run ``playbook``; it must fail naming ``words`` and change neither traffic, state
    nor data. (``check_env=False`` where the test's deploy hook itself rewrote the .env.)"""
    state, rows, env = site.state(), site.rows(), site.env()
    rc, out, err = site.play(playbook, **extra)
    assert rc != 0, 'expected %s %r to be refused' % (os.path.basename(playbook), extra)
    message = failure(out, err)
    for word in words:
        assert word in message, message
    assert http_get(site.port) == http
    assert site.state() == state
    assert site.rows() == rows
    if check_env:
        assert site.env() == env
    return message


def test_refusals_change_nothing(site):
    site.deploy('v1')
    # the other slot is still empty
    _refused(site, ROLLBACK, ['target slot green', 'empty', 'not changed'], http='v1')
    site.deploy('v2')
    # bad input
    _refused(site, ROLLBACK, ['unknown project nosuchproject'], project='nosuchproject')
    _refused(site, ROLLBACK, ['project must be a project name'], project='../../etc')
    _refused(site, ROLLBACK, ['to_version v9 is not in the history'], to_version='v9')
    _refused(site, ROLLBACK, ['to_version', 'not allowed'], to_version='../v1')
    _refused(site, ROLLBACK, ['restore_redis needs bluegreen_redis_enabled'], restore_redis=True,
             bluegreen_redis_enabled=False)
    _refused(site, ROLLBACK, ['restore_db must be true or false', '"maybe"'], restore_db='maybe')
    # a deploy whose migration fails: no switch, and the message names the step and the
    # snapshot taken before it
    _refused(site, DEPLOY, ['Run the release migration', 'nosuchcolumn',
                            'Traffic and slot state were not changed',
                            'The database snapshot taken before the deploy is %s-' % site.project],
             version='vbad')

    # a broken nginx configuration: no switch, a clear error (rollback and deploy)
    broken = os.path.join(site.nginx.conf_d, 'zz-broken.conf')
    with open(broken, 'w') as handle:
        handle.write('server { listen 127.0.0.1:1; bogus_directive on; }\n')
    _refused(site, ROLLBACK, ['nginx accepts its configuration', 'bogus_directive',
                              'Traffic and slot state were not changed'], restore_db=True)
    _refused(site, DEPLOY, ['switch traffic', 'nginx -t failed', 'traffic stays on green'],
             version='v3', check_env=False)
    os.unlink(broken)

    # a corrupted snapshot: refused before any switch, HTTP still v2
    path = os.path.join(site.vars['bluegreen_db_backup_dir'], site.state()['blue']['dbSnapshot'])
    with open(path, 'r+b') as handle:
        handle.seek(os.path.getsize(path) // 2)
        handle.write(b'\0garbage\0')
    backups = site.backups()
    _refused(site, ROLLBACK, ['verify the target slot', 'not changed'], restore_db=True)
    assert site.backups() == backups        # not even a safety snapshot was taken


def _task_results(out, name):
    """Results of the task called ``name`` (a role's task is reported as "<role> : name")."""
    return [result for play in out['plays'] for task in play['tasks']
            if task['task']['name'].split(' : ', 1)[-1] == name
            for result in task['hosts'].values()]


def test_no_app_hosts_in_the_inventory_fails_loudly(tmp_path):
    """rollback.yml (and deploy.yml) against an inventory without codeb_app must fail
    and name the inventory, never exit 0 having done nothing."""
    inventory = tmp_path / 'hosts.yml'
    inventory.write_text('all:\n  hosts:\n    db1:\n      ansible_connection: local\n')
    for playbook in (ROLLBACK, DEPLOY):
        rc, out, err = run_playbook(playbook, inventory=str(inventory),
                                    extra_vars={'project': 'worb', 'version': 'v1',
                                                'ansible_python_interpreter': sys.executable})
        assert rc != 0, (playbook, out)
        message = failure(out, err)
        assert str(inventory) in message and '"codeb_app"' in message, message
        assert 'nothing was changed' in message, message
        # and a pattern given with -e bluegreen_hosts that matches nothing as well
        rc, out, err = run_playbook(playbook, inventory=str(inventory),
                                    extra_vars={'project': 'worb', 'bluegreen_hosts': 'web*',
                                                'ansible_python_interpreter': sys.executable})
        assert rc != 0 and '"web*"' in failure(out, err), out


def test_check_mode_predicts_and_an_interrupted_switch_is_finished(site):
    site.deploy('v1')
    site.deploy('v2')
    state, rows, backups = site.state(), site.rows(), site.backups()
    # --check once reported "database restored from ..., safety snapshot X" for
    # files that do not exist
    rc, out, err = run_playbook(ROLLBACK, inventory='localhost,', check=True,
                                extra_vars=dict(site.vars, restore_db=True))
    assert rc == 0, failure(out, err)
    message = _task_results(out, 'Show the result')[0]['msg']
    assert 'would take a safety snapshot' in message and 'would restore' in message, message
    assert 'restored from' not in message and 'now serves' not in message, message
    assert site.state() == state and site.rows() == rows and site.backups() == backups
    assert http_get(site.port) == 'v2'

    # A rollback whose switch was killed after it wrote the include, before
    # nginx reloaded: nginx still serves v2, and the next rollback must really switch
    include = traffic.include_path(site.nginx.include_dir, site.project)
    durable.atomic_write_bytes(include, traffic.render_include(site.project, 'blue').encode(),
                               mode=0o644)
    assert http_get(site.port) == 'v2'
    rc, out, err = site.play(ROLLBACK)
    assert rc == 0, failure(out, err)
    switch = _task_results(out, 'Step 4/5: switch traffic to the target slot')[0]
    assert switch['changed'] is True, switch
    assert http_get(site.port) == 'v1'
    assert site.state()['activeSlot'] == 'blue'
    status = traffic.status(site.nginx.include_dir, site.project, site.nginx.state_dir)
    assert status['slot'] == 'blue' and status['in_sync'] is True, status
    # the same after the state was recorded but nginx not reloaded: to_version=v1 is
    # "already active" in the state, yet nginx must be made to serve it
    durable.atomic_write_bytes(include, traffic.render_include(site.project, 'green').encode(),
                               mode=0o644)
    rc, out, err = site.play(ROLLBACK, to_version='v1')
    assert rc == 0, failure(out, err)
    assert http_get(site.port) == 'v1'
    assert 'nginx had not applied it' in _task_results(out, 'Show the result')[0]['msg']


def test_safety_snapshots_leave_the_daily_snapshot_metrics_alone(site):
    """Deploy and rollback safety snapshots once wrote kind="pg_snapshot", hiding a
    failing daily snapshot job of the same database."""
    metrics_dir = site.vars['bluegreen_metrics_dir']
    os.makedirs(metrics_dir, exist_ok=True)
    daily = os.path.join(metrics_dir, 'codeb_backup_pg_snapshot_%s.prom' % site.database)
    failing_daily = ('codeb_backup_last_status{kind="pg_snapshot",target="%s"} 0\n'
                     % site.database)
    with open(daily, 'w') as handle:
        handle.write(failing_daily)
    site.deploy('v1')
    site.deploy('v2')
    rc, out, err = site.play(ROLLBACK, restore_db=True)
    assert rc == 0, failure(out, err)
    with open(daily) as handle:
        assert handle.read() == failing_daily
    safety = os.path.join(metrics_dir, 'codeb_backup_pg_snapshot_safety_%s.prom' % site.database)
    with open(safety) as handle:
        assert 'codeb_backup_last_status{kind="pg_snapshot_safety",target="%s"} 1' \
            % site.database in handle.read()
