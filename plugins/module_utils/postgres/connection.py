# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one PostgreSQL connection layer: options, libpq environment, tools, OS user, psql.

Every PostgreSQL job of the collection (snapshots, restores, pgBackRest, drills) reaches
the server through :class:`Connection`: one set of option names (``CONNECTION_OPTIONS``,
documented once in the ``codeb.backup.postgres`` doc fragment), one way to pass them to
libpq (environment variables, so the password never appears in a process list), one way to
switch to the OS user for peer authentication, and one psql runner, one-shot or coprocess.

Why psql and not psycopg2: the jobs must run ``pg_dump`` and ``pg_restore`` as processes
anyway, and the host command runs from cron with the system Python and Debian packages
only (``postgresql-client-15`` brings psql; psycopg2 would be one more package to install
and keep matching the server). Driving psql with the same environment and the same OS user
as pg_dump means a connection that works for one tool works for all of them, including
peer authentication and ``~/.pgpass``.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
import tempfile

from ansible_collections.codeb.backup.plugins.module_utils import process
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.spec import Option

DEFAULT_PG_BIN_DIR = '/usr/lib/postgresql/15/bin'
DEFAULT_UNIX_SOCKET = '/var/run/postgresql'
DEFAULT_PORT = 5432
DEFAULT_LOGIN_USER = 'postgres'
DEFAULT_MAINTENANCE_DB = 'postgres'
DEFAULT_CONNECT_TIMEOUT = 10
# The host command reads the password from this variable when no password file is given.
PASSWORD_ENV = 'CODEB_PG_PASSWORD'
APPLICATION_NAME = 'codeb-backup'
# libpq settings of the calling environment that would silently redirect a job to another
# server, user or database: the job's own options replace them.
_LIBPQ_ENV = ('PGHOST', 'PGHOSTADDR', 'PGPORT', 'PGUSER', 'PGDATABASE', 'PGSERVICE',
              'PGOPTIONS', 'PGPASSWORD')

CONNECTION_OPTIONS = (
    Option('login_host', default='', aliases=('host',),
           help='server host name or address; empty: the unix socket'),
    Option('login_port', type='int', default=DEFAULT_PORT, aliases=('port',),
           help='server port'),
    Option('login_user', default=DEFAULT_LOGIN_USER, aliases=('login',),
           help='database role to connect as'),
    Option('login_password', no_log=True, aliases=('password',)),
    Option('login_unix_socket', type='path', default=DEFAULT_UNIX_SOCKET,
           aliases=('unix_socket',),
           help='directory of the server socket, used when login_host is empty'),
    Option('maintenance_db', default=DEFAULT_MAINTENANCE_DB,
           help='database to connect to for server-wide statements'),
    Option('connect_timeout', type='int', default=DEFAULT_CONNECT_TIMEOUT,
           help='seconds to wait for a connection'),
    Option('os_user', aliases=('pg_user',),
           help='run the PostgreSQL tools as this OS user (peer authentication)'),
    Option('pg_bin_dir', type='path', default=DEFAULT_PG_BIN_DIR, aliases=('pg_bin',),
           help='directory of psql, pg_dump and pg_restore'),
)
# The host command's way to the password: a file, never a flag (every user of the host
# can read another process's arguments).
PASSWORD_FILE_OPTION = Option('login_password_file', type='path',
                              help='file (mode 0600, owned by the caller) holding the password;'
                                   ' default $%s or ~/.pgpass' % PASSWORD_ENV)


def check_connection(params):
    """Fill in the connection defaults and check what the types cannot say (the port's
    range); return a copy. Runs for the module and for the host command."""
    p = dict(params)
    port = DEFAULT_PORT if p.get('login_port') is None else p['login_port']
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BackupError('login_port must be a TCP port 1-65535; got %r' % (port,),
                          param='login_port')
    p['login_port'] = port
    timeout = p.get('connect_timeout')
    timeout = DEFAULT_CONNECT_TIMEOUT if timeout is None else timeout
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise BackupError('connect_timeout must be an integer >= 1; got %r' % (timeout,),
                          param='connect_timeout')
    p['connect_timeout'] = timeout
    p['login_host'] = p.get('login_host') or ''
    socket = p.get('login_unix_socket')
    p['login_unix_socket'] = DEFAULT_UNIX_SOCKET if socket is None else socket
    p['login_user'] = p.get('login_user') or DEFAULT_LOGIN_USER
    p['maintenance_db'] = p.get('maintenance_db') or DEFAULT_MAINTENANCE_DB
    p['pg_bin_dir'] = p.get('pg_bin_dir') or DEFAULT_PG_BIN_DIR
    p['os_user'] = p.get('os_user') or None
    return p


def read_password_file(path, param='login_password_file'):
    """The password in ``path`` (surrounding whitespace removed). Refused unless the file
    is owned by the caller (or root) and readable by nobody else (mode 0600 or stricter):
    a password other users could read or replace is a leaked password."""
    try:
        with open(path) as handle:
            info = os.fstat(handle.fileno())
            if info.st_mode & 0o077:
                raise BackupError('%s %s is readable by group/others (mode %o); chmod 600 it'
                                  % (param, path, info.st_mode & 0o777), param=param)
            if info.st_uid not in (os.geteuid(), 0):
                raise BackupError('%s %s is owned by uid %d, not by the user running this '
                                  '(uid %d) or root; chown it' % (param, path, info.st_uid,
                                                                  os.geteuid()), param=param)
            return handle.read().strip()
    except OSError as exc:
        raise BackupError('cannot read %s %s: %s' % (param, path, exc), param=param)


def cli_password(args, param='login_password_file'):
    """The host command's password: ``--login-password-file``, else ``$CODEB_PG_PASSWORD``,
    else None (libpq then tries ``~/.pgpass`` and peer authentication)."""
    path = getattr(args, param, None)
    if path:
        return read_password_file(path, param)
    return os.environ.get(PASSWORD_ENV) or None


def as_os_user(os_user, param='os_user'):
    """``(popen_kwargs, env)`` to run a tool as ``os_user``: nothing for None or the current
    user, subprocess's own user switch (no sudo or runuser needed) when root, else an
    error naming ``param``. ``env`` sets HOME so the tool finds that user's ``~/.pgpass``."""
    if not os_user:
        return {}, {}
    try:
        entry = pwd.getpwnam(os_user)
    except KeyError:
        raise BackupError('%s %r does not exist on this host' % (param, os_user), param=param)
    env = dict(HOME=entry.pw_dir)
    if os.geteuid() == entry.pw_uid:
        return {}, env
    if os.geteuid() != 0:
        raise BackupError('%s %r: switching to that OS user needs root; run as root or as %s'
                          % (param, os_user, os_user), param=param)
    return dict(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
                cwd=entry.pw_dir if os.path.isdir(entry.pw_dir) else '/'), env


def ident(name):
    """``name`` as a quoted SQL identifier."""
    return '"%s"' % name.replace('"', '""')


def literal(value):
    """``value`` as a quoted SQL string literal."""
    return "'%s'" % str(value).replace("'", "''")


class Connection(object):
    """How to reach one server: ``params`` holds the ``CONNECTION_OPTIONS`` (missing ones
    take their defaults). Every tool started here gets the libpq environment, runs as
    ``os_user`` and dies with the job."""

    def __init__(self, params):
        self.params = check_connection(params)
        self.bin_dir = self.params['pg_bin_dir']
        self.os_user = self.params['os_user']

    @property
    def switches_user(self):
        """True when the tools run as another OS user than this process (files they
        write belong to that user; files they read must be readable by it)."""
        return 'user' in as_os_user(self.os_user)[0]

    def tool(self, name):
        """The path of PostgreSQL tool ``name`` in ``pg_bin_dir``, or an error naming it."""
        path = os.path.join(self.bin_dir, name)
        if not os.access(path, os.X_OK):
            raise BackupError('%s not found in pg_bin_dir %s: install postgresql-client-15 or '
                              'set pg_bin_dir' % (name, self.bin_dir), param='pg_bin_dir')
        return path

    def env(self):
        """The libpq variables of this connection (added to the environment, after the
        caller's own ``PG*`` settings are removed)."""
        p = self.params
        env = dict(PGPORT=str(p['login_port']), PGUSER=p['login_user'],
                   PGCONNECT_TIMEOUT=str(p['connect_timeout']), PGAPPNAME=APPLICATION_NAME)
        host = p['login_host'] or p['login_unix_socket']
        if host:
            env['PGHOST'] = host
        if p.get('login_password'):
            env['PGPASSWORD'] = p['login_password']
        env.update(as_os_user(self.os_user)[1])
        return env

    def popen_kwargs(self):
        """Keyword arguments for ``process.run``/``process.spawn`` of a PostgreSQL tool."""
        kwargs = as_os_user(self.os_user)[0]
        kwargs.update(env=self.env(), unset=_LIBPQ_ENV, preexec_fn=process.die_with_parent)
        return kwargs

    def run(self, argv, what, input_data=None, check=True, timeout=None, **kwargs):
        """Run a PostgreSQL tool to completion (at most ``timeout`` seconds); a failure
        raises ``connection_error``. ``kwargs`` go to ``process.run`` (``stdout``,
        ``stderr``, ``stdin``, ``pass_fds``, or ``env`` to replace the libpq variables)."""
        options = self.popen_kwargs()
        options.update(kwargs)
        proc = process.run(argv, what=what, input_data=input_data, check=False,
                           timeout=timeout, **options)
        if check and proc.returncode != 0:
            raise self.error(proc.stderr, what, proc.returncode)
        return proc

    def spawn(self, argv, **kwargs):
        """Start a PostgreSQL tool that streams (into a pipeline); the caller waits."""
        options = self.popen_kwargs()
        options.update(kwargs)
        return process.spawn(argv, **options)

    def psql(self, sql, database, what='psql', timeout=None):
        """Run ``sql`` (one or more statements, one implicit transaction) in ``database``;
        return psql's unaligned, tuples-only output."""
        argv = [self.tool('psql'), '-X', '-w', '-At', '-v', 'ON_ERROR_STOP=1',
                '--dbname=%s' % database, '-c', sql]
        return self.run(argv, what, timeout=timeout).stdout

    def session(self, database):
        """A psql coprocess on ``database``: statements sent one after the other in one
        session (one transaction can stay open while other tools run)."""
        return PsqlSession(self, database)

    def server_version(self, database):
        """Connect to ``database``; return ``server_version`` (e.g. '15.8'). Raises a
        BackupError naming login_password / login_port / database on failure."""
        out = self.psql('SHOW server_version', database,
                        what='connecting to database %r' % database).strip()
        return out.split()[0] if out else ''

    def tool_version(self, name):
        """The version ``name --version`` prints, or '' when it cannot be run."""
        try:
            out = self.run([self.tool(name), '--version'], what='%s --version' % name,
                           check=False).stdout
        except BackupError:
            return ''
        return out.strip().split()[-1] if out.strip() else ''

    def error(self, stderr, what, rc=None):
        return connection_error(stderr, self.params, what, rc)


class PsqlSession(object):
    """psql reading statements from a pipe; each statement's output is read back up to an
    ``\\echo`` marker. This needs a process that stays alive between statements (a
    REPEATABLE READ transaction is held open while pg_dump uses its exported snapshot), so
    it is the one psql started with ``process.spawn`` rather than ``process.run``."""

    MARKER = '__codeb_end__'

    def __init__(self, conn, database):
        self.conn = conn
        self.errfile = tempfile.TemporaryFile()
        self.proc = conn.spawn(
            [conn.tool('psql'), '-X', '-w', '-At', '-q', '-v', 'ON_ERROR_STOP=1',
             '--dbname=%s' % database],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errfile, text=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def send(self, sql):
        """Start ``sql``; collect its output later with ``read``."""
        self.proc.stdin.write(sql.rstrip().rstrip(';') + ';\n\\echo %s\n' % self.MARKER)
        self.proc.stdin.flush()

    def query_lines(self, sql, what):
        """Run ``sql`` and return its output lines."""
        self.send(sql)
        return self.read(what)

    def read(self, what):
        """The output lines of the statement sent last; a failure raises
        ``connection_error`` (psql stops at the first error)."""
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                self.errfile.seek(0)
                raise self.conn.error(self.errfile.read().decode('utf-8', 'replace'), what,
                                      self.proc.returncode)
            line = line.rstrip('\n')
            if line == self.MARKER:
                return lines
            lines.append(line)

    def close(self):
        """End the session (an open transaction is rolled back) and wait for psql."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errfile.close()


def connection_error(stderr, params, what, rc=None):
    """Turn a libpq/tool failure into a BackupError that names the parameter to fix."""
    text = (stderr or '').strip()
    tail = text[-process.STDERR_TAIL:]
    lower = text.lower()
    user = params.get('login_user')
    if 'password authentication failed' in lower or 'no password supplied' in lower:
        return BackupError('%s: the server refused the password of login_user %r (%s)'
                           % (what, user, tail), param='login_password', rc=rc)
    if 'peer authentication failed' in lower or 'ident authentication failed' in lower \
            or 'no pg_hba.conf entry' in lower \
            or re.search(r'fatal:\s+role "[^"]*" does not exist', lower):
        return BackupError('%s: the server refused login_user %r: %s' % (what, user, tail),
                           param='login_user', rc=rc)
    match = re.search(r'database "([^"]*)" is not currently accepting connections', text)
    if match:
        return BackupError(
            '%s: database %r does not accept connections (ALLOW_CONNECTIONS is false). If a '
            'pg_snapshot restore was interrupted, any next run for that database (not in check '
            'mode) reopens it; otherwise reopen it yourself: psql -d %s -c \'ALTER DATABASE '
            '%s ALLOW_CONNECTIONS true\''
            % (what, match.group(1), params.get('maintenance_db'), ident(match.group(1))),
            param='database', rc=rc)
    match = re.search(r'database "([^"]*)" does not exist', text)
    if match:
        name = match.group(1)
        param = 'maintenance_db' if name == params.get('maintenance_db') \
            and name != params.get('database') else 'database'
        return BackupError('%s: database %r does not exist on the server' % (what, name),
                           param=param, rc=rc)
    if 'could not connect' in lower or 'connection refused' in lower or 'timeout expired' in lower \
            or 'could not translate host name' in lower or 'no such file or directory' in lower \
            and 'connection to server' in lower:
        return BackupError('%s: cannot connect to PostgreSQL at %s port %s: %s' % (
            what, params.get('login_host') or params.get('login_unix_socket') or 'default socket',
            params.get('login_port'), tail), param='login_port', rc=rc)
    return BackupError('%s failed%s: %s' % (what, '' if rc is None else ' (exit %s)' % rc, tail),
                       rc=rc)
