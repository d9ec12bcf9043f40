"""Real nginx and two tiny HTTP apps (blue and green) on loopback, for blue-green tests.

nginx runs from a temp prefix with its own nginx.conf (``daemon off`` in a Popen, master
plus one worker, ``user root``); the apps are ``python -m http.server`` processes serving
a docroot whose index.html is the deployed version. Everything is stopped by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

from helpers.ansible_runner import ROOT, run_playbook
from helpers.servers import RedisServer, free_port, wait_for

NGINX = '/usr/sbin/nginx'


def http_get(port, path='/', timeout=5):
    """The body of GET http://127.0.0.1:<port><path> on a fresh connection."""
    with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path), timeout=timeout) as resp:
        return resp.read().decode().strip()


def _listening(port):
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(('127.0.0.1', port)) == 0


class App(object):
    """``python -m http.server`` serving ``docroot``; GET / answers index.html."""

    def __init__(self, docroot, port=None):
        self.docroot = docroot
        self.port = port or free_port()
        self.proc = None
        os.makedirs(docroot, exist_ok=True)

    def deploy(self, version):
        with open(os.path.join(self.docroot, 'index.html'), 'w') as handle:
            handle.write(version + '\n')

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'http.server', '--bind', '127.0.0.1', str(self.port),
             '--directory', self.docroot], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _listening(self.port), 30, 'app on port %d' % self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None


class Nginx(object):
    """nginx -p <base> -c <base>/nginx.conf; includes every ``<base>/conf.d/*.conf``."""

    def __init__(self, base, include_dir=None, state_dir=None):
        self.base = base
        self.conf = os.path.join(base, 'nginx.conf')
        self.conf_d = os.path.join(base, 'conf.d')
        # the switched includes, and where a switch records what nginx has applied
        self.include_dir = include_dir or os.path.join(base, 'bluegreen')
        self.state_dir = state_dir or os.path.join(base, 'traffic')
        self.metrics_dir = os.path.join(base, 'metrics')
        self.pid_file = os.path.join(base, 'nginx.pid')
        self.proc = None
        for sub in ('conf.d', 'tmp', 'logs'):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        os.makedirs(self.include_dir, exist_ok=True)
        temps = ''.join('    %s_temp_path %s/tmp/%s;\n' % (kind, base, kind)
                        for kind in ('client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'))
        with open(self.conf, 'w') as handle:
            handle.write(
                'user root;\nworker_processes 1;\ndaemon off;\npid %s;\n'
                'error_log %s/logs/error.log;\n'
                'events { worker_connections 128; }\n'
                'http {\n    access_log off;\n%s    include %s/*.conf;\n}\n'
                % (self.pid_file, base, temps, self.conf_d))

    @property
    def module_args(self):
        """traffic_switch options for this nginx."""
        return {'include_dir': self.include_dir, 'nginx_binary': NGINX, 'nginx_conf': self.conf,
                'nginx_prefix': self.base, 'pid_file': self.pid_file, 'state_dir': self.state_dir,
                'metrics_dir': self.metrics_dir}

    def cli_args(self):
        """The same options for ``codeb-backup traffic-switch``."""
        return ['--include-dir', self.include_dir, '--nginx-binary', NGINX,
                '--nginx-conf', self.conf, '--nginx-prefix', self.base,
                '--pid-file', self.pid_file, '--state-dir', self.state_dir,
                '--metrics-dir', self.metrics_dir]

    def write_site(self, project, listen, blue_port, green_port, initial_slot='blue'):
        """A hand-written equivalent of the bluegreen role's site (for traffic-only tests)."""
        with open(os.path.join(self.conf_d, 'codeb-%s.conf' % project), 'w') as handle:
            handle.write(
                'upstream codeb_%(p)s_blue { server 127.0.0.1:%(b)d; }\n'
                'upstream codeb_%(p)s_green { server 127.0.0.1:%(g)d; }\n'
                'server {\n    listen 127.0.0.1:%(l)d;\n'
                '    location / {\n        include %(i)s/%(p)s-active.conf;\n    }\n}\n'
                % {'p': project, 'b': blue_port, 'g': green_port, 'l': listen,
                   'i': self.include_dir})
        with open(os.path.join(self.include_dir, '%s-active.conf' % project), 'w') as handle:
            handle.write('# codeb-active-slot: %s\nproxy_pass http://codeb_%s_%s;\n'
                         % (initial_slot, project, initial_slot))

    def start(self, port=None):
        self.proc = subprocess.Popen([NGINX, '-p', self.base, '-c', self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while not (os.path.exists(self.pid_file) and (port is None or _listening(port))):
            if self.proc.poll() is not None:
                raise RuntimeError('nginx exited: %s' % self.proc.stderr.read().decode())
            if time.monotonic() > deadline:
                raise RuntimeError('nginx did not come up')
            time.sleep(0.05)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.running():
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None


# --- a blue-green site: what deploy.yml and rollback.yml are tested on (and AWX's rollback template)

DEPLOY = os.path.join(ROOT, 'playbooks', 'deploy.yml')
ROLLBACK = os.path.join(ROOT, 'playbooks', 'rollback.yml')

# The user's deploy hook: "install" the release into the slot's docroot and run its
# migration (a SQL statement per version) against the project's database.
HOOK = [
    {'name': 'Install the release into the slot',
     'ansible.builtin.copy': {'content': '{{ deploy_version }}\n',
                              'dest': '{{ test_app_root }}/{{ deploy_slot }}/index.html',
                              'mode': '0644'}},
    {'name': 'Run the release migration',
     'ansible.builtin.command': {'argv': ['{{ test_psql }}', '-X', '-v', 'ON_ERROR_STOP=1',
                                          '-h', '{{ test_pg_socket }}', '-p', '{{ test_pg_port }}',
                                          '-U', 'postgres', '-d', '{{ test_database }}',
                                          '-c', '{{ test_migrations[deploy_version] }}']},
     'when': 'deploy_version in test_migrations', 'changed_when': True},
    {'name': 'Write the release ENV file',
     'ansible.builtin.copy': {'content': 'MODE={{ deploy_version }}\n', 'dest': '{{ test_env_file }}',
                              'mode': '0600'}},
]

MIGRATIONS = {
    'v1': "CREATE TABLE items (id int PRIMARY KEY, name text); "
          "INSERT INTO items VALUES (1, 'one'), (2, 'two')",
    'v2': "ALTER TABLE items ADD COLUMN price int DEFAULT 5; "
          "UPDATE items SET name = upper(name); INSERT INTO items VALUES (3, 'THREE', 7)",
    'vbad': "UPDATE items SET nosuchcolumn = 1",
}


class Site(object):
    """A blue-green project on real nginx, two apps, Redis and the given PostgreSQL, set up
    by the bluegreen role; ``deploy``/``play`` run the playbooks against it."""
    def __init__(self, pg_cluster, project):
        self.base = tempfile.mkdtemp(prefix='codeb-test-bg-')
        os.chmod(self.base, 0o755)
        self.project = project
        self.pg = pg_cluster
        self.database = project
        pg_cluster.create_database(self.database)
        self.apps = {slot: App(os.path.join(self.base, 'apps', slot)) for slot in ('blue', 'green')}
        for slot, app in self.apps.items():
            app.deploy('empty-%s' % slot)
        self.nginx = Nginx(os.path.join(self.base, 'nginx'))
        self.port = free_port()
        # a Redis that a restore may stop and start again (daemonized, found by its pidfile)
        redis_base = os.path.join(self.base, 'redis')
        os.makedirs(redis_base)
        self.redis_pidfile = os.path.join(redis_base, 'redis.pid')
        self.redis = RedisServer(redis_base, appendonly=True,
                                 extra_config={'pidfile': self.redis_pidfile})
        self.env_file = os.path.join(self.base, 'app.env')
        with open(self.env_file, 'w') as handle:
            handle.write('MODE=initial\n')
        self.hook = os.path.join(self.base, 'hook.yml')
        with open(self.hook, 'w') as handle:
            yaml.safe_dump(HOOK, handle)
        self.vars = {
            'ansible_python_interpreter': sys.executable,
            'ansible_connection': 'local',
            'project': project,
            'bluegreen_hosts': 'localhost',
            'bluegreen_projects': [{'name': project, 'listen': '127.0.0.1:%d' % self.port,
                                    'blue': ['127.0.0.1:%d' % self.apps['blue'].port],
                                    'green': ['127.0.0.1:%d' % self.apps['green'].port],
                                    'database': self.database, 'env_file': self.env_file}],
            'bluegreen_install_nginx': False,
            'bluegreen_manage_service': False,
            'bluegreen_nginx_binary': '/usr/sbin/nginx',
            'bluegreen_nginx_conf': self.nginx.conf,
            'bluegreen_nginx_prefix': self.nginx.base,
            'bluegreen_nginx_pid_file': self.nginx.pid_file,
            'bluegreen_site_dir': self.nginx.conf_d,
            'bluegreen_include_dir': self.nginx.include_dir,
            'bluegreen_state_dir': os.path.join(self.base, 'slots'),
            'bluegreen_traffic_state_dir': self.nginx.state_dir,
            'bluegreen_health_retries': 5,
            'bluegreen_db_host': 'localhost',
            'bluegreen_db_backup_dir': os.path.join(self.base, 'db-backup'),
            'bluegreen_db_login_unix_socket': pg_cluster.socket_dir,
            'bluegreen_db_login_port': pg_cluster.port,
            'bluegreen_db_os_user': '',
            'bluegreen_metrics_dir': os.path.join(self.base, 'metrics'),
            'bluegreen_env_root': os.path.join(self.base, 'env-backup'),
            'bluegreen_redis_enabled': True,
            'bluegreen_redis_host': 'localhost',
            'bluegreen_redis_backup_dir': os.path.join(self.base, 'redis-backup'),
            'bluegreen_redis_login_port': self.redis.port,
            'bluegreen_redis_service_name': '',
            'bluegreen_redis_start_command': [shutil.which('redis-server') or '/usr/bin/redis-server',
                                              self.redis.conf_path, '--daemonize', 'yes'],
            'bluegreen_deploy_hook': self.hook,
            # host_cli has its own test; copying the core takes most of a role run here
            'bluegreen_install_host_cli': False,
            'test_app_root': os.path.join(self.base, 'apps'),
            'test_psql': os.path.join(pg_cluster.bin, 'psql'),
            'test_pg_socket': pg_cluster.socket_dir,
            'test_pg_port': pg_cluster.port,
            'test_database': self.database,
            'test_migrations': MIGRATIONS,
            'test_env_file': self.env_file,
        }

    def start(self, check_idempotent=False):
        self.redis.start()
        for app in self.apps.values():
            app.start()
        self.nginx.start()
        play = [{'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
                 'roles': [{'role': 'codeb.backup.bluegreen'}]}]
        path = os.path.join(self.base, 'setup.yml')
        with open(path, 'w') as handle:
            yaml.safe_dump(play, handle)
        for _run in range(2 if check_idempotent else 1):
            rc, out, err = run_playbook(path, inventory='localhost,', extra_vars=self.vars)
            assert rc == 0, (out, err)
        if check_idempotent:
            # second run of the role: nothing changed
            assert out['stats']['localhost']['changed'] == 0, changed_tasks(out)
        assert http_get(self.port) == 'empty-blue'

    def stop(self):
        self.redis.stop()
        try:    # a restore restarted it as a daemon: stop that one by its pid
            with open(self.redis_pidfile) as handle:
                os.kill(int(handle.read().strip()), signal.SIGTERM)
        except (OSError, ValueError):
            pass
        self.nginx.stop()
        for app in self.apps.values():
            app.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def play(self, playbook, **extra):
        rc, out, err = run_playbook(playbook, inventory='localhost,',
                                    extra_vars=dict(self.vars, **extra))
        return rc, out, err

    def deploy(self, version):
        rc, out, err = self.play(DEPLOY, version=version)
        assert rc == 0, failure(out, err)
        return out

    def state(self):
        with open(os.path.join(self.vars['bluegreen_state_dir'], '%s.json' % self.project)) as fh:
            return json.load(fh)

    def env(self):
        with open(self.env_file) as handle:
            return handle.read()

    def rows(self):
        return self.pg.psql('SELECT * FROM items ORDER BY id', database=self.database)

    def backups(self):
        return sorted(os.listdir(self.vars['bluegreen_db_backup_dir']))


def changed_tasks(out):
    return [task['task']['name'] for play in out['plays'] for task in play['tasks']
            if any(result.get('changed') for result in task['hosts'].values())]


def failure(out, err):
    """The failed task's message, for assertions and readable test failures."""
    if not isinstance(out, dict):
        return str(out) + err
    messages = []
    for play in out.get('plays', []):
        for task in play['tasks']:
            for result in task['hosts'].values():
                if result.get('failed') and not result.get('skipped'):
                    messages.append('%s: %s' % (task['task']['name'], result.get('msg')))
    return '\n'.join(messages) or err
