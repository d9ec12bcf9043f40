"""The redis_backup role, backup.yml's Redis play (shipping over SSH to a real throwaway
sshd whose key runs the forced `codeb-backup receive`) and playbooks/redis-restore.yml,
run by real ansible-playbook against a real redis-server."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import sys

import yaml

from ansible_collections.codeb.backup.plugins.module_utils import durable
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from helpers.ansible_runner import ROOT, apply_role, run_playbook
from helpers.servers import RedisServer
from helpers.sshd import SshServer, cli_wrapper


def _role_vars(server, tmp_path, **extra):
    return dict({
        'redis_backup_install_host_cli': False,
        'redis_backup_conf_path': server.conf_path,
        'redis_backup_persistence_conf_path': str(tmp_path / 'codeb-persistence.conf'),
        'redis_backup_conf_owner': 'root', 'redis_backup_conf_group': 'root',
        'redis_backup_data_dir': server.base,
        'redis_backup_service_name': '',
        'redis_backup_login_port': server.port,
        'redis_backup_login_password': server.password or '',
        'redis_backup_password_file': str(tmp_path / 'etc' / 'redis.password'),
        'redis_backup_dir': str(tmp_path / 'snapshots'),
        'redis_backup_cron_file': str(tmp_path / 'cron.d' / 'codeb-redis-backup'),
        'redis_backup_metrics_dir': str(tmp_path / 'metrics'),
    }, **extra)


def test_role_templates_applies_live_installs_cron_and_is_idempotent(redis_factory, tmp_path):
    server = redis_factory(appendonly=False, password='role-secret')
    # Shaped like Debian's redis.conf: directives separated by blank lines and comments
    # (a pattern whose leading whitespace crossed line ends once left them active).
    lines = open(server.conf_path).read().splitlines()
    with open(server.conf_path, 'w') as handle:
        handle.write('\n\n'.join(['# redis.conf as packaged'] + lines) + '\n')
    (tmp_path / 'cron.d').mkdir()
    role_vars = _role_vars(server, tmp_path)
    rc, out, err = apply_role(tmp_path, 'redis_backup', role_vars)
    assert rc == 0, (err, json.dumps(out)[-3000:])
    assert out['stats']['localhost']['changed'] >= 5
    live = server.client().config_get('*')
    assert live['appendonly'] == 'yes' and live['save'] == '900 1 300 10 60 10000'
    assert live['auto-aof-rewrite-min-size'] == str(64 * 1024 * 1024)

    rendered = (tmp_path / 'codeb-persistence.conf').read_text()
    assert 'save 900 1 300 10 60 10000\n' in rendered and 'appendonly yes\n' in rendered
    main_conf = open(server.conf_path).read()
    assert '\nsave ' not in '\n' + main_conf and '# save ""' in main_conf
    assert main_conf.rstrip().endswith('include %s' % (tmp_path / 'codeb-persistence.conf'))

    cron = (tmp_path / 'cron.d' / 'codeb-redis-backup').read_text()
    assert 'redis-snapshot' in cron and '--login-password-file' in cron and 'role-secret' not in cron
    assert '--login-port %d' % server.port in cron
    pw = tmp_path / 'etc' / 'redis.password'
    assert stat.S_IMODE(os.stat(pw).st_mode) == 0o600 and pw.read_text() == 'role-secret\n'
    assert 'role-secret' not in json.dumps(out)

    rc, out, err = apply_role(tmp_path, 'redis_backup', role_vars)
    assert rc == 0, err
    assert out['stats']['localhost']['changed'] == 0, 'second run must report changed=0'

    # Redis started from the edited files gets the same settings (include + commented lines)
    server.settle()
    server.stop()
    server.start()
    after = server.client().config_get('*')
    assert after['save'] == '900 1 300 10 60 10000' and after['appendonly'] == 'yes'


def test_role_empty_save_list_renders_save_off(redis_factory, tmp_path):
    server = redis_factory(appendonly=True, extra_config={'save': '3600 1'})
    (tmp_path / 'cron.d').mkdir()
    role_vars = _role_vars(server, tmp_path, redis_backup_save=[])
    checked_rc, checked, err = apply_role(tmp_path, 'redis_backup', role_vars, check=True)
    assert checked_rc == 0, err
    assert server.client().config_get('save')['save'] == '3600 1', 'check mode changed nothing'
    assert not (tmp_path / 'codeb-persistence.conf').exists()
    rc, out, err = apply_role(tmp_path, 'redis_backup', role_vars)
    assert rc == 0, err
    assert 'save ""\n' in (tmp_path / 'codeb-persistence.conf').read_text()
    assert server.client().config_get('save')['save'] == ''
    server.stop()
    server.start()
    assert server.client().config_get('save')['save'] == '', 'not the built-in default points'


def _inventory(tmp_path, server_vars):
    local = {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable}
    inventory = {'all': {'vars': local, 'children': {
        'codeb_storage': {'hosts': {'redis-store': server_vars}},
        'codeb_backup': {'hosts': {'redis-vault': {}}},
    }}}
    path = tmp_path / 'hosts.yml'
    path.write_text(yaml.safe_dump(inventory))
    return str(path)


def _tasks(out):
    for play in out['plays']:
        for task in play['tasks']:
            yield task['task']['name'], task['hosts']


def test_backup_play_ships_over_ssh_and_restore_playbook(tmp_path, tmp_path_factory):
    base = str(tmp_path_factory.mktemp('redis-pb'))
    server = RedisServer(base, appendonly=True, extra_config={'pidfile': os.path.join(base, 'r.pid')})
    server.start()
    (tmp_path / 'sshd').mkdir()
    root = tmp_path / 'backup-root'
    root.mkdir()
    sshd = SshServer(str(tmp_path / 'sshd'))
    cli = cli_wrapper(str(tmp_path / 'sshd' / 'codeb-backup'))
    sshd.authorize('%s receive --root %s --accept redis_snapshot' % (cli, root))
    sshd.start()
    try:
        client = server.client()
        client.mset({'pb%d' % i: i for i in range(250)})
        store, vault = tmp_path / 'store', root / 'redis'
        hostvars = {'redis_backup_login_port': server.port, 'redis_backup_dir': str(store),
                    'redis_backup_ship_dir': str(vault), 'redis_backup_ship_root': str(root),
                    'redis_backup_ship_host': sshd.host, 'redis_backup_ship_port': sshd.port,
                    'redis_backup_ship_key_path': sshd.client_key,
                    'redis_backup_ship_known_hosts': sshd.known_hosts,
                    'redis_backup_cli_path': cli,
                    'redis_backup_metrics_dir': str(tmp_path / 'metrics'),
                    'codeb_pg_databases': []}
        inventory = _inventory(tmp_path, hostvars)
        backup_yml = os.path.join(ROOT, 'playbooks', 'backup.yml')
        rc, out, err = run_playbook(backup_yml, inventory=inventory)
        assert rc == 0, (err, json.dumps(out)[-4000:], sshd.read_log())
        tasks = dict(_tasks(out))
        shipped_task = tasks['codeb.backup.redis_backup : Ship the snapshots the backup host lacks '
                             '(sha256 verified on arrival)']['redis-store']
        assert shipped_task['changed'] is True
        assert '--ship-host' in shipped_task['cmd'] and 'fetch' not in json.dumps(tasks)
        shipped = Manifest(str(vault)).load()
        source = Manifest(str(store)).load()
        assert sorted(shipped) == sorted(source) and len(source) == 2
        for name, entry in shipped.items():
            assert entry['sha256'] == source[name]['sha256'] == durable.sha256_file(
                str(vault / name))
        assert os.listdir(vault / '.incoming') == ['.receive.lock']
        # the report prints the key count, not the dict's keys method (item.keys)
        reports = tasks['Report the Redis snapshots']['redis-store']['results']
        assert len(reports) == 2 and all(re.search(r'bytes, \d+ keys', r['msg']) for r in reports), reports
        # a second run ships nothing new but the new snapshot
        rc, out, err = run_playbook(backup_yml, inventory=inventory)
        assert rc == 0, err
        assert len(Manifest(str(vault)).load()) == 3  # one more RDB; AOF keeps the latest 1

        # restore through the playbook: check mode first (nothing happens), then for real
        client.flushall()
        client.set('later', 1)
        restore_yml = os.path.join(ROOT, 'playbooks', 'redis-restore.yml')
        start = ['redis-server', server.conf_path, '--daemonize', 'yes']
        extra = {'redis_snapshot': 'latest', 'redis_backup_start_command': start}
        rc, out, err = run_playbook(restore_yml, inventory=inventory, extra_vars=extra, check=True)
        assert rc == 0, (err, json.dumps(out)[-3000:])
        assert client.dbsize() == 1
        rc, out, err = run_playbook(restore_yml, inventory=inventory, extra_vars=extra)
        assert rc == 0, (err, json.dumps(out)[-3000:])
        result = dict(_tasks(out))['Restore the snapshot']['redis-store']
        assert result['keys'] == 250 == result['expected_keys']
        report = dict(_tasks(out))['Report the restore']['redis-store']['msg']
        assert '250 keys (manifest 250)' in report and 'built-in' not in report, report
        assert server.client().dbsize() == 250 and server.client().get('later') is None

        # a bad name is refused before anything happens, naming the parameter
        rc, out, err = run_playbook(restore_yml, inventory=inventory,
                                    extra_vars=dict(extra, redis_snapshot='../../etc/passwd'))
        assert rc != 0
        failed = dict(_tasks(out))['Restore the snapshot']['redis-store']
        assert failed['param'] == 'snapshot'
        assert server.client().dbsize() == 250
    finally:
        sshd.stop()
        server.stop()
        try:
            with open(os.path.join(base, 'r.pid')) as handle:
                os.kill(int(handle.read()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
