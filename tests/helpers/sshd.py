"""A throwaway OpenSSH server on a loopback port, for tests of shipping over SSH.

Everything lives in a temp dir: the config, a fresh host key, the ``authorized_keys`` file
(``AuthorizedKeysFile``), a client key and a ``known_hosts`` file holding the host key, so
the client runs with ``StrictHostKeyChecking=yes`` exactly as in production. The server runs
in the foreground (``sshd -D``) and is stopped by its PID. Needs root (sshd switches to
the logging-in user) and Debian's openssh-server (scripts/install-deps.sh installs it).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time

from helpers.servers import free_port

SSHD = '/usr/sbin/sshd'
# sshd insists on its privilege separation directory; systemd creates it at boot for the
# system's sshd, which this machine does not run.
PRIVSEP_DIR = '/run/sshd'
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def keygen(path, comment='codeb-test'):
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', path],
                   check=True, capture_output=True)
    return path


def cli_wrapper(path, python=None):
    """A ``codeb-backup`` for the forced command: the repository's CLI under this Python, or
    ``python`` (e.g. Debian's, with its packaged FastAPI); the host_cli role installs the
    same thing on real hosts."""
    with open(path, 'w') as handle:
        handle.write('#!/bin/sh\nexec %s -c %s %s "$@"\n' % (
            shlex.quote(python or sys.executable),
            shlex.quote('import sys\nsys.path.insert(0, sys.argv.pop(1))\n'
                        'from ansible_collections.codeb.backup.plugins.module_utils.cli import main\n'
                        'sys.exit(main())'),
            shlex.quote(os.path.join(ROOT, '.collections'))))
    os.chmod(path, 0o755)
    return path


def run_cli(*args):
    """The repository's ``codeb-backup ARGS`` under Debian's python3, as cron runs it on a
    host; the finished process."""
    code = ('import sys; sys.path.insert(0, %r); '
            'from ansible_collections.codeb.backup.plugins.module_utils.cli import main; '
            'sys.exit(main())' % os.path.join(ROOT, '.collections'))
    return subprocess.run(['/usr/bin/python3', '-c', code] + list(args), capture_output=True,
                          text=True, check=False, timeout=600)


class SshServer(object):
    """sshd on 127.0.0.1:<random>; ``authorize(forced_command)`` adds the client key with
    ``restrict,command="..."``; ``client_args()`` are the ship.Target settings."""

    user = 'root'
    host = '127.0.0.1'

    def __init__(self, base):
        self.base = base
        self.port = free_port()
        self.host_key = keygen(os.path.join(base, 'ssh_host_ed25519_key'), 'codeb-test-host')
        self.client_key = keygen(os.path.join(base, 'id_ed25519'))
        self.authorized_keys = os.path.join(base, 'authorized_keys')
        self.known_hosts = os.path.join(base, 'known_hosts')
        self.log = os.path.join(base, 'sshd.log')
        self.proc = None
        with open(self.host_key + '.pub') as handle:
            kind, key = handle.read().split()[:2]
        with open(self.known_hosts, 'w') as handle:
            handle.write('[%s]:%d %s %s\n' % (self.host, self.port, kind, key))
        open(self.authorized_keys, 'w').close()
        self.config = os.path.join(base, 'sshd_config')
        with open(self.config, 'w') as handle:
            handle.write('\n'.join([
                'Port %d' % self.port,
                'ListenAddress %s' % self.host,
                'HostKey %s' % self.host_key,
                'PidFile %s' % os.path.join(base, 'sshd.pid'),
                'AuthorizedKeysFile %s' % self.authorized_keys,
                'StrictModes no',  # the temp dir's modes are pytest's
                'UsePAM no',
                'PasswordAuthentication no',
                'KbdInteractiveAuthentication no',
                'PubkeyAuthentication yes',
                'PermitRootLogin forced-commands-only',
                'AllowUsers %s' % self.user,
                'LogLevel VERBOSE',
                '']))

    def authorize(self, forced_command):
        with open(self.client_key + '.pub') as handle:
            public = handle.read().strip()
        with open(self.authorized_keys, 'w') as handle:
            handle.write('restrict,command="%s" %s\n' % (forced_command.replace('"', '\\"'), public))

    def start(self):
        if not os.path.isdir(PRIVSEP_DIR):
            os.makedirs(PRIVSEP_DIR, mode=0o755, exist_ok=True)
        subprocess.run([SSHD, '-t', '-f', self.config], check=True, capture_output=True)
        self.proc = subprocess.Popen([SSHD, '-D', '-f', self.config, '-E', self.log],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError('sshd exited: %s' % self.read_log())
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError('sshd did not listen within 20 s: %s' % self.read_log())

    def read_log(self):
        try:
            with open(self.log) as handle:
                return handle.read()[-3000:]
        except OSError:
            return ''

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def target_kwargs(self):
        return dict(host=self.host, user=self.user, port=self.port, key_file=self.client_key,
                    known_hosts=self.known_hosts)

    def cli_args(self):
        return ['--ship-host', self.host, '--ship-user', self.user, '--ship-port', str(self.port),
                '--ship-key', self.client_key, '--ship-known-hosts', self.known_hosts]


def receiving_host(tmp_path, receive_args):
    """A started "backup host": sshd whose only key runs ``codeb-backup receive --root ROOT
    RECEIVE_ARGS``; ``server.root`` is ROOT. Stop it with ``server.stop()``."""
    base = tmp_path / 'sshd'
    base.mkdir()
    root = tmp_path / 'backup-root'
    root.mkdir()
    server = SshServer(str(base))
    wrapper = cli_wrapper(str(base / 'codeb-backup'))
    server.authorize('%s receive --root %s %s' % (wrapper, root, receive_args))
    server.start()
    server.root = root
    return server
