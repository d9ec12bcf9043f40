"""The nginx traffic switch against a real nginx and two real HTTP apps on loopback."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import durable
from ansible_collections.codeb.backup.plugins.module_utils.bluegreen import traffic
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from helpers.ansible_runner import run_module
from helpers.bluegreen import App, Nginx, http_get
from helpers.servers import free_port


@pytest.fixture
def site():
    base = tempfile.mkdtemp(prefix='codeb-test-nginx-')
    blue, green = App(os.path.join(base, 'blue')), App(os.path.join(base, 'green'))
    blue.deploy('blue-v1')
    green.deploy('green-v2')
    nginx = Nginx(base)
    port = free_port()
    nginx.write_site('worb', port, blue.port, green.port)
    started = []
    try:
        for server in (blue, green):
            server.start()
            started.append(server)
        nginx.start(port)
        started.append(nginx)
        yield nginx, port
    finally:
        for server in started:
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _include(nginx):
    with open(os.path.join(nginx.include_dir, 'worb-active.conf')) as handle:
        return handle.read()


def test_switch_moves_traffic_and_is_idempotent(site):
    nginx, port = site
    assert http_get(port) == 'blue-v1'
    result = run_module('codeb.backup.traffic_switch', dict(nginx.module_args, project='worb',
                                                            slot='green'), diff=True)
    assert result.get('failed') is not True, result
    assert result['changed'] is True
    assert result['previous_slot'] == 'blue' and result['slot'] == 'green'
    assert result['diff']['after'] == 'active slot: green\n'
    assert result['duration_seconds'] > 0 and result['size_bytes'] > 0
    # the switch returns only once nginx serves the new slot
    assert http_get(port) == 'green-v2'
    again = run_module('codeb.backup.traffic_switch', dict(nginx.module_args, project='worb',
                                                           slot='green'))
    assert again['changed'] is False
    assert http_get(port) == 'green-v2'
    # only final names in the include directory
    assert sorted(os.listdir(nginx.include_dir)) == ['.worb-switch.lock', 'worb-active.conf']
    query = run_module('codeb.backup.traffic_switch', dict(nginx.module_args, project='worb',
                                                           state='query'))
    assert query['slot'] == 'green' and query['changed'] is False


def test_check_mode_predicts_and_changes_nothing(site):
    nginx, port = site
    before = _include(nginx)
    result = run_module('codeb.backup.traffic_switch', dict(nginx.module_args, project='worb',
                                                            slot='green'), check=True)
    assert result['changed'] is True and result['slot'] == 'green'
    assert _include(nginx) == before
    assert http_get(port) == 'blue-v1'


def test_broken_nginx_config_keeps_traffic_and_says_why(site):
    nginx, port = site
    before = _include(nginx)
    with open(os.path.join(nginx.conf_d, 'zz-broken.conf'), 'w') as handle:
        handle.write('upstream broken { server 127.0.0.1:1 weight=banana; }\n')
    result = run_module('codeb.backup.traffic_switch', dict(nginx.module_args, project='worb',
                                                            slot='green'))
    assert result['failed'] is True
    assert result['param'] == 'nginx_conf'
    assert 'nginx -t failed' in result['msg'] and 'traffic stays on blue' in result['msg']
    assert 'weight' in result['nginx_output']
    assert _include(nginx) == before
    assert nginx.running()
    assert http_get(port) == 'blue-v1'
    # check mode sees the broken configuration too
    with pytest.raises(BackupError) as info:
        traffic.switch('worb', 'green', check_mode=True, **nginx.module_args)
    assert info.value.param == 'nginx_conf'


def test_nginx_not_running_puts_include_back(site):
    nginx, _port = site
    before = _include(nginx)
    nginx.stop()
    with pytest.raises(BackupError) as info:
        traffic.switch('worb', 'green', **nginx.module_args)
    assert info.value.param == 'pid_file' and 'not running' in info.value.msg
    assert _include(nginx) == before


@pytest.mark.parametrize('args, param', [
    (dict(project='../etc', slot='green'), 'project'),
    (dict(project='worb/../x', slot='green'), 'project'),
    (dict(project='worb', slot='red'), None),
    (dict(project='worb', slot=5), None),
])
def test_bad_input_is_refused_and_changes_nothing(site, args, param):
    nginx, port = site
    before = _include(nginx)
    result = run_module('codeb.backup.traffic_switch', dict(nginx.module_args, **args))
    assert result['failed'] is True
    if param:
        assert result['param'] == param and param in result['msg']
    else:
        assert 'slot' in result['msg']
    assert _include(nginx) == before
    assert http_get(port) == 'blue-v1'


def test_hand_edited_include_is_refused(site):
    nginx, port = site
    path = os.path.join(nginx.include_dir, 'worb-active.conf')
    with open(path, 'w') as handle:
        handle.write('proxy_pass http://127.0.0.1:9;\n')
    with pytest.raises(BackupError) as info:
        traffic.switch('worb', 'green', **nginx.module_args)
    assert info.value.param == 'include_dir' and 'edited by hand' in info.value.msg
    assert _include(nginx) == 'proxy_pass http://127.0.0.1:9;\n'


def test_present_creates_only_a_missing_include(site):
    nginx, _port = site
    result = traffic.ensure_include('worb', 'green', include_dir=nginx.include_dir)
    assert result['changed'] is False and result['slot'] == 'blue'
    result = traffic.ensure_include('other', 'green', include_dir=nginx.include_dir,
                                    check_mode=True)
    assert result['changed'] is True
    assert not os.path.exists(os.path.join(nginx.include_dir, 'other-active.conf'))
    result = traffic.ensure_include('other', 'green', include_dir=nginx.include_dir)
    assert result['changed'] is True
    assert traffic.read_active(nginx.include_dir, 'other') == 'green'


def _status(nginx, project='worb'):
    """What ``codeb-backup traffic-status`` reports, through the host command."""
    from ansible_collections.codeb.backup.plugins.module_utils import cli
    parser = cli.build_parser()
    args = ['traffic-status', '--project', project, '--include-dir', nginx.include_dir]
    if 'state_dir' in nginx.module_args:
        args += ['--state-dir', nginx.module_args['state_dir']]
    parsed = parser.parse_args(args)
    return parsed.handler(parsed)


def test_switch_interrupted_before_the_reload_is_finished_by_the_next_switch(site):
    """A switch killed after it wrote the include but before nginx reloaded.
    The include says green, nginx still serves blue; the retry must test and reload, and
    the status must tell what nginx serves, not what the include says."""
    nginx, port = site
    path = os.path.join(nginx.include_dir, 'worb-active.conf')
    first = traffic.switch('worb', 'blue', **nginx.module_args)
    assert first['slot'] == 'blue' and http_get(port) == 'blue-v1'
    # exactly what a switch to green has done when it is killed right after the rename
    durable.atomic_write_bytes(path, traffic.render_include('worb', 'green').encode(), mode=0o644)
    assert http_get(port) == 'blue-v1'
    status = _status(nginx)
    assert status['slot'] == 'blue', status
    assert status['include_slot'] == 'green' and status['in_sync'] is False, status
    result = run_module('codeb.backup.traffic_switch', dict(nginx.module_args, project='worb',
                                                            slot='green'))
    assert result.get('failed') is not True, result
    assert result['changed'] is True and result['previous_slot'] == 'blue', result
    assert http_get(port) == 'green-v2'
    status = _status(nginx)
    assert status['slot'] == 'green' and status['in_sync'] is True, status
    # and now, really, nothing left to do
    again = run_module('codeb.backup.traffic_switch', dict(nginx.module_args, project='worb',
                                                           slot='green'))
    assert again['changed'] is False, again
    assert http_get(port) == 'green-v2'


def test_removing_a_killed_switchs_temporary_is_a_change(site):
    """``changed`` is true exactly when something was written: a switch with nothing to
    switch still removes the temporary include a killed switch left, and says so."""
    nginx, port = site
    traffic.switch('worb', 'blue', **nginx.module_args)
    assert traffic.switch('worb', 'blue', **nginx.module_args)['changed'] is False
    path = os.path.join(nginx.include_dir, 'worb-active.conf')
    stale = durable.temp_path(path)
    with open(stale, 'w') as handle:
        handle.write('proxy_pass http://codeb_worb_gr')
    assert traffic.switch('worb', 'blue', **nginx.module_args)['changed'] is True
    assert not os.path.exists(stale)
    assert traffic.switch('worb', 'blue', **nginx.module_args)['changed'] is False
    assert http_get(port) == 'blue-v1'
