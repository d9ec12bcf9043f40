"""Throwaway PostgreSQL and Redis servers from Debian's packages, for tests and benches."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time

PG_BIN = '/usr/lib/postgresql/15/bin'
PG_PASSWORD = 'pg-test-secret'


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout, what):
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError('timed out after %s s waiting for %s' % (timeout, what))


def stop_process(proc, sig=signal.SIGTERM, grace=30):
    """Stop a process this run started, by its PID: ``sig``, then SIGKILL after ``grace``
    seconds. Nothing happens if ``proc`` is None or has already exited."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class PostgresCluster(object):
    """initdb into ``base``/data, listen on 127.0.0.1:<random> and a socket in ``base``."""

    user = 'postgres'
    password = PG_PASSWORD
    host = '127.0.0.1'

    def __init__(self, base, port=None, extra_conf=None):
        self.base = base
        self.data = os.path.join(base, 'data')
        self.socket_dir = base
        self.port = port or free_port()
        self.extra_conf = extra_conf or {}
        self.bin = PG_BIN
        self.proc = None
        self._pw = pwd.getpwnam('postgres')
        os.chmod(base, 0o755)
        os.chown(base, self._pw.pw_uid, self._pw.pw_gid)

    def _as_postgres(self, argv, **kwargs):
        return subprocess.run(argv, check=True, capture_output=True, text=True,
                              user=self._pw.pw_uid, group=self._pw.pw_gid, extra_groups=[],
                              **kwargs)

    def start(self):
        if not os.path.exists(os.path.join(self.data, 'PG_VERSION')):
            pwfile = os.path.join(self.base, 'pwfile')
            with open(pwfile, 'w') as handle:
                handle.write(self.password + '\n')
            os.chown(pwfile, self._pw.pw_uid, self._pw.pw_gid)
            self._as_postgres([os.path.join(self.bin, 'initdb'), '-D', self.data, '-U', 'postgres',
                               '--auth-local=trust', '--auth-host=scram-sha-256',
                               '--pwfile', pwfile, '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync'])
            os.unlink(pwfile)
            conf = dict({'listen_addresses': "'127.0.0.1'", 'port': str(self.port),
                         'unix_socket_directories': "'%s'" % self.socket_dir,
                         'fsync': 'off', 'max_connections': '50',
                         'shared_buffers': '128MB'}, **self.extra_conf)
            with open(os.path.join(self.data, 'postgresql.auto.conf'), 'a') as handle:
                for key, value in conf.items():
                    handle.write('%s = %s\n' % (key, value))
        self.proc = subprocess.Popen(
            # Started directly as the postgres user (not through runuser), so the signal
            # stop() sends reaches the postmaster itself.
            [os.path.join(self.bin, 'postgres'), '-D', self.data],
            user=self._pw.pw_uid, group=self._pw.pw_gid, extra_groups=[], cwd=self.base,
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.base, 'postgres.log'), 'ab'))
        wait_for(lambda: subprocess.run(
            [os.path.join(self.bin, 'pg_isready'), '-h', self.socket_dir, '-p', str(self.port)],
            capture_output=True, check=False).returncode == 0, 30, 'PostgreSQL')

    def stop(self):
        stop_process(self.proc, signal.SIGINT)  # SIGINT = fast shutdown
        self.proc = None

    @property
    def env(self):
        """libpq environment for a superuser connection through the private socket."""
        return {'PGHOST': self.socket_dir, 'PGPORT': str(self.port), 'PGUSER': self.user}

    def psql(self, sql, database='postgres', check=True):
        """Run SQL; return stdout (unaligned, tuples only)."""
        proc = subprocess.run([os.path.join(self.bin, 'psql'), '-X', '-v', 'ON_ERROR_STOP=1',
                               '-At', '-d', database, '-c', sql],
                              env=dict(os.environ, **self.env), capture_output=True, text=True,
                              check=False)
        if check and proc.returncode != 0:
            raise RuntimeError('psql failed: %s' % proc.stderr)
        return proc.stdout.strip()

    def create_database(self, name, drop=True):
        ident = '"%s"' % name.replace('"', '""')
        if drop:
            self.psql('DROP DATABASE IF EXISTS %s WITH (FORCE)' % ident)
        self.psql('CREATE DATABASE %s' % ident)


class RedisServer(object):
    """redis-server on 127.0.0.1:<random> with its ``dir`` in ``base``."""

    host = '127.0.0.1'

    def __init__(self, base, appendonly=True, password=None, extra_config=None, port=None):
        self.base = base
        self.port = port or free_port()
        self.password = password
        self.appendonly = appendonly
        self.extra_config = extra_config or {}
        self.conf_path = os.path.join(base, 'redis.conf')
        self.proc = None
        self.write_config()

    def write_config(self):
        conf = {
            'bind': '127.0.0.1', 'port': str(self.port), 'dir': self.base,
            'dbfilename': 'dump.rdb', 'appendonly': 'yes' if self.appendonly else 'no',
            'appenddirname': 'appendonlydir', 'appendfsync': 'everysec',
            'daemonize': 'no', 'save': '""', 'logfile': os.path.join(self.base, 'redis.log'),
        }
        if self.password:
            conf['requirepass'] = self.password
        conf.update(self.extra_config)
        with open(self.conf_path, 'w') as handle:
            for key, value in conf.items():
                handle.write('%s %s\n' % (key, value))

    def start(self):
        self.proc = subprocess.Popen([shutil.which('redis-server') or '/usr/bin/redis-server',
                                      self.conf_path], stdout=subprocess.DEVNULL)
        wait_for(self._ping, 30, 'Redis')

    def client(self):
        import redis
        return redis.Redis(host=self.host, port=self.port, password=self.password)

    def settle(self):
        """Wait for the AOF rewrite that turning appendonly on live starts: Redis refuses to
        shut down while it writes the initial AOF, which would stall stop()."""
        client = self.client()
        for _attempt in range(600):
            info = client.info('persistence')
            if not int(info['aof_rewrite_in_progress']) and not int(info['aof_rewrite_scheduled']):
                return
            time.sleep(0.05)
        raise AssertionError('the AOF rewrite did not finish')

    def _ping(self):
        try:
            return self.client().ping()
        except Exception:
            return False

    def stop(self):
        stop_process(self.proc)
        self.proc = None
