"""Real nginx and two tiny HTTP apps (blue and green) on loopback, for blue-green tests.

nginx runs from a temp prefix with its own nginx.conf (``daemon off`` in a Popen, master
plus one worker, ``user root``); the apps are ``python -m http.server`` processes serving
a docroot whose index.html is the deployed version. Everything is stopped by PID.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from helpers.servers import free_port, wait_for

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
