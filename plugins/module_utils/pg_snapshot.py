# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-database PostgreSQL snapshots: pg_dump, verify, restore by swap, retention.

Layout: ``{backup_dir}/{db}-{YYYY-MM-DDTHH:MM:SS}.dump`` (custom format, gzip or none;
a directory for format ``directory``) or ``...dump.zst`` (custom format, uncompressed by
pg_dump and compressed by ``zstd``: PostgreSQL 15's pg_dump only knows gzip). Every
snapshot is written under a temporary name, checked with ``pg_restore --list``, committed
by rename and then recorded in ``{backup_dir}/manifest.json`` with its sha256, size,
duration, server version and the exact per-table row counts of the dumped data (counted
in the very MVCC snapshot pg_dump used, via ``pg_export_snapshot``).

A restore checks the sha256 first, restores into a fresh temporary database, compares the
row counts with the manifest, and only then swaps it in by renaming, so a failed restore
leaves the live database exactly as it was.

Used by the ``pg_snapshot`` / ``pg_snapshot_info`` modules and by the ``codeb-backup
pg-snapshot`` host command (cron); nothing here depends on Ansible.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable, metrics, naming, process
from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError, BackupError
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.retention import is_good, plan_retention

DEFAULT_BACKUP_DIR = '/opt/codeb/db-backup/postgresql'
DEFAULT_PG_BIN_DIR = '/usr/lib/postgresql/15/bin'
FORMATS = ('custom', 'directory')
STATES = ('present', 'verified', 'restored', 'pruned')
# Chosen by bench/pg_snapshot_bench.py (docs/benchmarks.md): zstd level 1 on an
# uncompressed custom-format stream was the fastest candidate and smaller than pg_dump's
# default gzip (levels 3 and 6 were slower and no smaller). jobs=1: on the 2-core bench
# machine a streamed serial restore was as fast as jobs=2 (33.0 s vs 34.2 s) and needs no
# scratch space; jobs>1 decompresses to a temporary file so pg_restore -j can seek.
DEFAULT_COMPRESSION = 'zstd:1'
# Session settings of pg_restore's own connections into the temporary database (libpq
# PGOPTIONS); the server's configuration and every other session are left alone. Measured
# with bench/pg_snapshot_bench.py (docs/benchmarks.md, "Restore session settings"):
# - synchronous_commit=off: pg_restore commits once per table, index and constraint, and
#   each synchronous commit waits for a WAL flush (300 small tables: 1 510 flushes become
#   16; 1.15x a plain serial pg_restore instead of 0.86x). Safe because the swap commits
#   synchronously (_durable): that flushes all WAL written before it, so nothing of the
#   restore is acknowledged before it is durable, and a crash before the swap leaves the
#   live database as it was (the temporary one is dropped by the next run's reconcile).
# - maintenance_work_mem=256MB (default 64MB): memory for the primary-key and index sorts
#   (1GB halved the primary-key builds in one phase measurement, but the whole restore was
#   no faster than with 256MB); one session per pg_restore worker, small next to a
#   storage host's RAM.
# No CHECKPOINT before the swap: it took 0.4-3 s per GB restored, and writes every database's
# dirty buffers, for a guarantee the synchronous swap already gives.
RESTORE_SESSION_SETTINGS = (('synchronous_commit', 'off'), ('maintenance_work_mem', '256MB'))
DEFAULT_FORMAT = 'custom'
DEFAULT_JOBS = 1
DEFAULT_KEEP_DAYS = 7
DEFAULT_KEEP_MIN = 3
DEFAULT_LOCK_TIMEOUT = 60.0
KIND = 'pg_snapshot'
KIND_VERIFY = 'pg_snapshot_verify'
KIND_RESTORE = 'pg_snapshot_restore'
KIND_PRUNE = 'pg_snapshot_prune'
# Safety snapshots (taken by deploy and rollback) report under their own metrics kind, so
# their success can never mask a failing scheduled job of the same database.
PURPOSES = {'scheduled': KIND, 'safety': 'pg_snapshot_safety'}
DEFAULT_PURPOSE = 'scheduled'
# A restore replaces the target by renaming databases: never a template (every CREATE
# DATABASE would clone the snapshot), and the maintenance database only when asked for.
TEMPLATE_DATABASES = ('template0', 'template1')
POSTGRES_DATABASE = 'postgres'

_STAMP = naming.TIMESTAMP_PATTERN
_COMPRESSION_RE = re.compile(r'\A(none|gzip|zstd)(?::(\d{1,2}))?\Z')
_SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema')"

# One query counting every user table's rows, inside whatever snapshot the session uses.
ROW_COUNT_SQL = (
    "SELECT format('%I.%I', n.nspname, c.relname) || '|' || "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', "
    "n.nspname, c.relname), false, true, '')))[1]::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname NOT IN " + _SYSTEM_SCHEMAS + " "
    "AND n.nspname !~ '^pg_(toast|temp_)' "
    "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
    "AND d.objid = c.oid AND d.deptype = 'e') "
    "ORDER BY 1")
LARGE_OBJECT_SQL = 'SELECT count(*) FROM pg_largeobject_metadata'


# --------------------------------------------------------------------------- options

def parse_compression(value):
    """``none`` | ``gzip[:0-9]`` | ``zstd[:1-19]`` -> ``(method, level)``."""
    match = _COMPRESSION_RE.match(str(value or '').strip().lower())
    if not match:
        raise BackupError("compression must be one of none, gzip, gzip:N (N 1-9), zstd, zstd:N "
                          "(N 1-19); got %r" % (value,), param='compression')
    method, level = match.group(1), match.group(2)
    if method == 'none':
        if level is not None:
            raise BackupError('compression none takes no level; got %r' % (value,),
                              param='compression')
        return 'none', 0
    level = int(level) if level is not None else (6 if method == 'gzip' else 3)
    limit = 9 if method == 'gzip' else 19
    if not 1 <= level <= limit:
        raise BackupError('compression %s level must be 1-%d; got %r' % (method, limit, value),
                          param='compression')
    return method, level


def check_options(params):
    """Validate the options every state shares; return a normalised copy."""
    p = dict(params)
    naming.validate_name('database', p.get('database'))
    if p.get('target_database') not in (None, ''):
        naming.validate_name('target_database', p['target_database'])
        p['_target_param'] = 'target_database'
    else:
        p['target_database'] = p['database']
        p['_target_param'] = 'database'
    purpose = p.get('purpose') or DEFAULT_PURPOSE
    if purpose not in PURPOSES:
        raise BackupError('purpose must be one of %s; got %r' % (', '.join(sorted(PURPOSES)),
                                                                 purpose), param='purpose')
    p['purpose'] = purpose
    backup_dir = p.get('backup_dir') or DEFAULT_BACKUP_DIR
    if not isinstance(backup_dir, str) or not os.path.isabs(backup_dir) \
            or '..' in backup_dir.split(os.sep):
        raise BackupError('backup_dir must be an absolute path without ".."; got %r'
                          % (backup_dir,), param='backup_dir')
    p['backup_dir'] = os.path.normpath(backup_dir)
    fmt = p.get('format') or DEFAULT_FORMAT
    if fmt not in FORMATS:
        raise BackupError('format must be one of %s; got %r' % (', '.join(FORMATS), fmt),
                          param='format')
    p['format'] = fmt
    method, level = parse_compression(p.get('compression') or DEFAULT_COMPRESSION)
    if fmt == 'directory' and method == 'zstd':
        raise BackupError('compression zstd needs format custom (PostgreSQL 15 pg_dump '
                          'compresses directory format with gzip only); use gzip:N or none',
                          param='compression')
    p['compression'] = method if method == 'none' else '%s:%d' % (method, level)
    p['_method'], p['_level'] = method, level
    for name, default, low in (('jobs', DEFAULT_JOBS, 1), ('keep_days', DEFAULT_KEEP_DAYS, 0),
                               ('keep_min', DEFAULT_KEEP_MIN, 1)):
        value = p.get(name)
        value = default if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise BackupError('%s must be an integer >= %d; got %r' % (name, low, value),
                              param=name)
        p[name] = value
    p['lock_timeout'] = float(p.get('lock_timeout') if p.get('lock_timeout') is not None
                              else DEFAULT_LOCK_TIMEOUT)
    if p.get('metrics_dir') is None:
        p['metrics_dir'] = metrics.DEFAULT_TEXTFILE_DIR
    port = 5432 if p.get('login_port') is None else p['login_port']
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BackupError('login_port must be a TCP port 1-65535; got %r' % (port,),
                          param='login_port')
    p['login_port'] = port
    p['login_user'] = p.get('login_user') or 'postgres'
    p['maintenance_db'] = p.get('maintenance_db') or 'postgres'
    p['pg_bin_dir'] = p.get('pg_bin_dir') or DEFAULT_PG_BIN_DIR
    if (p.get('state') or 'present') == 'restored':
        _check_restore_target(p)
    return p


def _check_restore_target(p):
    target, param = p['target_database'], p['_target_param']
    if target in TEMPLATE_DATABASES:
        raise BackupError('refusing to restore into the template database %r: every later '
                          'CREATE DATABASE would copy the snapshot. Restore into another '
                          'database with target_database.' % target, param=param)
    if target == POSTGRES_DATABASE and not p.get('allow_postgres_database'):
        raise BackupError('refusing to restore into the maintenance database %r: tools and '
                          'monitoring connect to it. Set allow_postgres_database to replace it '
                          'anyway.' % target, param=param)
    if target == p['maintenance_db']:
        raise BackupError('target_database %r is the maintenance_db this restore connects '
                          'through; set maintenance_db to another database (e.g. template1)'
                          % target, param='maintenance_db')


# --------------------------------------------------------------------------- running tools

class Connection(object):
    """libpq settings for psql / pg_dump / pg_restore; the password goes in PGPASSWORD."""

    def __init__(self, params):
        self.params = params
        self.bin_dir = params['pg_bin_dir']
        self.os_user = params.get('os_user') or None

    def tool(self, name):
        path = os.path.join(self.bin_dir, name)
        if not os.access(path, os.X_OK):
            raise BackupError('%s not found in pg_bin_dir %s: install postgresql-client-15 or '
                              'set pg_bin_dir' % (name, self.bin_dir), param='pg_bin_dir')
        return path

    def env(self):
        p = self.params
        env = dict(os.environ)
        for key in ('PGHOST', 'PGHOSTADDR', 'PGPORT', 'PGUSER', 'PGDATABASE', 'PGSERVICE',
                    'PGOPTIONS', 'PGPASSWORD'):
            env.pop(key, None)
        host = p.get('login_host') or p.get('login_unix_socket') or ''
        if host:
            env['PGHOST'] = host
        env['PGPORT'] = str(p['login_port'])
        env['PGUSER'] = p['login_user']
        env['PGCONNECT_TIMEOUT'] = str(p.get('connect_timeout') or 10)
        env['PGAPPNAME'] = 'codeb-backup'
        if p.get('login_password'):
            env['PGPASSWORD'] = p['login_password']
        if self.os_user:
            import pwd
            try:
                env['HOME'] = pwd.getpwnam(self.os_user).pw_dir
            except KeyError:
                raise BackupError('os_user %r does not exist on this host' % self.os_user,
                                  param='os_user')
        return env

    def popen_kwargs(self):
        kwargs = dict(env=self.env(), preexec_fn=process.die_with_parent)
        if self.os_user and os.geteuid() == 0:
            import pwd
            entry = pwd.getpwnam(self.os_user)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[],
                          cwd=entry.pw_dir if os.path.isdir(entry.pw_dir) else '/')
        return kwargs

    def run(self, argv, what, input_data=None, check=True):
        proc = subprocess.run(argv, input=input_data, capture_output=True, text=True,
                              check=False, **self.popen_kwargs())
        if check and proc.returncode != 0:
            raise connection_error(proc.stderr, self.params, what, proc.returncode)
        return proc

    def psql(self, sql, database, what='psql'):
        argv = [self.tool('psql'), '-X', '-w', '-At', '-v', 'ON_ERROR_STOP=1',
                '--dbname=%s' % database, '-c', sql]
        return self.run(argv, what).stdout

    def open_session(self, database):
        """A psql coprocess: one session to run several statements in one transaction."""
        return _Session(self, database)


class _Session(object):
    """psql reading statements from a pipe; each statement's single-line result is read
    back. Used to hold a REPEATABLE READ transaction open while pg_dump uses its
    exported snapshot."""

    def __init__(self, conn, database):
        self.conn = conn
        self.errfile = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [conn.tool('psql'), '-X', '-w', '-At', '-q', '-v', 'ON_ERROR_STOP=1',
             '--dbname=%s' % database],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.errfile, text=True,
            **conn.popen_kwargs())

    MARKER = '__codeb_end__'

    def send(self, sql):
        """Start ``sql``; collect its output later with ``read``."""
        self.proc.stdin.write(sql.rstrip().rstrip(';') + ';\n\\echo %s\n' % self.MARKER)
        self.proc.stdin.flush()

    def query_lines(self, sql, what):
        self.send(sql)
        return self.read(what)

    def read(self, what):
        marker = self.MARKER
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                self.errfile.seek(0)
                raise connection_error(self.errfile.read().decode('utf-8', 'replace'),
                                       self.conn.params, what, self.proc.returncode)
            line = line.rstrip('\n')
            if line == marker:
                return lines
            lines.append(line)

    def close(self):
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
    tail = text[-durable.CHUNK:][-2000:]
    lower = text.lower()
    if 'password authentication failed' in lower or 'no password supplied' in lower:
        return BackupError('%s: the server refused the password of login_user %r (%s)'
                           % (what, params.get('login_user'), tail), param='login_password', rc=rc)
    if 'peer authentication failed' in lower or 'ident authentication failed' in lower \
            or 'no pg_hba.conf entry' in lower \
            or re.search(r'fatal:\s+role "[^"]*" does not exist', lower):
        return BackupError('%s: the server refused login_user %r: %s' % (
            what, params.get('login_user'), tail), param='login_user', rc=rc)
    match = re.search(r'database "([^"]*)" is not currently accepting connections', text)
    if match:
        return BackupError(
            '%s: database %r does not accept connections (ALLOW_CONNECTIONS is false). If a '
            'pg_snapshot restore was interrupted, any next run for that database (not in check '
            'mode) reopens it; otherwise reopen it yourself: psql -d %s -c \'ALTER DATABASE '
            '%s ALLOW_CONNECTIONS true\''
            % (what, match.group(1), params.get('maintenance_db'), _ident(match.group(1))),
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


# --------------------------------------------------------------------------- naming, listing

def snapshot_name(database, stamp, method):
    return '%s-%s.dump%s' % (database, stamp, '.zst' if method == 'zstd' else '')


def _name_re(database):
    return re.compile(r'\A%s-(%s)\.dump(\.zst)?\Z' % (re.escape(database), _STAMP))


def _temp_re(database):
    return re.compile(r'\A%s%s-%s\.dump' % (re.escape(durable.TEMP_PREFIX), re.escape(database),
                                            _STAMP))


def lock_path(backup_dir, database):
    return os.path.join(backup_dir, '.pg_snapshot-%s.lock' % database)


def _entries_for(manifest, database=None):
    return [e for e in manifest.entries()
            if e.get('kind') == KIND and (database is None or e.get('database') == database)]


def list_snapshots(backup_dir=DEFAULT_BACKUP_DIR, database=None):
    """Snapshots recorded in the manifest, newest first, with their verification state."""
    if database is not None:
        naming.validate_name('database', database)
    if not os.path.isdir(backup_dir):
        return []
    result = []
    for entry in reversed(_entries_for(Manifest(backup_dir), database)):
        path = os.path.join(backup_dir, entry['file'])
        result.append(dict(
            file=entry['file'], path=path, database=entry.get('database'), time=entry['time'],
            size_bytes=entry.get('size_bytes'), sha256=entry.get('sha256'),
            status=entry.get('status', 'ok'), verified=entry.get('status', 'ok') == 'ok',
            verified_at=entry.get('verified_at'), format=entry.get('format'),
            compression=entry.get('compression'), server_version=entry.get('server_version'),
            duration_seconds=entry.get('duration_seconds'), exists=os.path.exists(path),
            tables=len(entry.get('tables') or {}), large_objects=entry.get('large_objects', 0)))
    return result


def select_entry(backup_dir, database, snapshot=None, good_only=True):
    """The manifest entry named by ``snapshot`` (file name or timestamp), or the latest
    (good) one of ``database``."""
    entries = _entries_for(Manifest(backup_dir), database)
    if snapshot in (None, '', 'latest'):
        candidates = [e for e in entries if is_good(e)] if good_only else entries
        if not candidates:
            raise BackupError('no %ssnapshot of database %r in %s' % (
                'good ' if good_only else '', database, backup_dir), param='snapshot')
        return candidates[-1]
    if not isinstance(snapshot, str) or '/' in snapshot or snapshot.startswith('.'):
        raise BackupError('snapshot must be "latest", a snapshot file name or its timestamp '
                          '(YYYY-MM-DDTHH:MM:SS); got %r' % (snapshot,), param='snapshot')
    for entry in entries:
        if snapshot in (entry['file'], entry['time']):
            return entry
    raise BackupError('snapshot %r of database %r is not in the manifest of %s; known: %s' % (
        snapshot, database, backup_dir, ', '.join(e['time'] for e in entries[-5:]) or 'none'),
        param='snapshot')


# --------------------------------------------------------------------------- checks

def artifact_sha256(path):
    """sha256 of a file, or of a directory tree (hash of the sorted 'name sha256' lines)."""
    if not os.path.isdir(path):
        return durable.sha256_file(path)
    digest = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        digest.update(('%s %s\n' % (name, durable.sha256_file(os.path.join(path, name))))
                      .encode())
    return digest.hexdigest()


def artifact_size(path):
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))


# pg_restore messages that are about pg_restore itself (too old for the archive), not
# evidence against the archive.
_TOOL_PROBLEMS = ('unsupported version', 'out of memory', 'could not open input file')


def check_archive(conn, path, method, database=None, full=True):
    """``pg_restore --list`` the archive (after ``zstd -t`` for zstd when ``full``); return
    ``(toc_entries, header)``. Raises ArtifactError when the archive itself is rejected
    (unreadable, empty, of another database) and a plain BackupError when a tool is
    missing or cannot judge it, so only evidence marks a snapshot bad."""
    pg_restore = conn.tool('pg_restore')
    zstd = _zstd() if method == 'zstd' else None
    if method == 'zstd':
        test = subprocess.run([zstd, '-q', '-t', path], capture_output=True, text=True,
                              check=False) if full else None
        if test is not None and test.returncode != 0:
            raise ArtifactError('zstd integrity test of %s failed: %s'
                                % (path, test.stderr.strip()))
        unzstd = subprocess.Popen([zstd, '-q', '-dc', path], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, preexec_fn=process.die_with_parent)
        listing = subprocess.run([pg_restore, '--list'], stdin=unzstd.stdout,
                                 capture_output=True, text=True, check=False)
        unzstd.stdout.close()
        unzstd.kill()  # pg_restore --list reads only the TOC at the head of the stream
        unzstd.wait()
    else:
        listing = subprocess.run([pg_restore, '--list', path], capture_output=True, text=True,
                                 check=False)
    if listing.returncode != 0:
        error = listing.stderr.strip()
        if any(text in error for text in _TOOL_PROBLEMS):
            raise BackupError('pg_restore %s cannot read %s: %s (the snapshot was not judged)'
                              % (pg_restore, path, error), param='pg_bin_dir')
        raise ArtifactError('pg_restore --list of %s failed: %s' % (path, error))
    header = dict(re.findall(r'^;\s+(dbname|Compression|Format): (.*)$', listing.stdout, re.M))
    toc = [line for line in listing.stdout.splitlines() if line and not line.startswith(';')]
    if 'dbname' not in header:
        raise ArtifactError('%s is not a pg_dump archive (no TOC header)' % path)
    if database is not None and header['dbname'] != database:
        raise ArtifactError('%s holds database %r, not %r' % (path, header['dbname'], database))
    return len(toc), header


def _zstd():
    path = shutil.which('zstd')
    if path:
        return path
    raise BackupError('zstd is not installed (needed to read and write .dump.zst snapshots); '
                      'install the zstd package', param='compression')


def verify_entry(conn, backup_dir, entry, full=True):
    """Re-check one snapshot: sha256 against the manifest, then the archive itself.
    Returns a report dict (``ok`` True/False, ``error``)."""
    path = os.path.join(backup_dir, entry['file'])
    method = (entry.get('compression') or 'none').split(':')[0]
    report = dict(file=entry['file'], path=path, time=entry['time'], sha256=entry.get('sha256'),
                  size_bytes=entry.get('size_bytes'), ok=False, sha256_ok=False, list_ok=False)
    try:
        report['actual_sha256'] = check_checksum(backup_dir, entry)
        report['sha256_ok'] = True
        report['toc_entries'] = check_archive(conn, path, method, entry.get('database'),
                                              full)[0]
    except ArtifactError as exc:  # anything else is not about this snapshot: it propagates
        report['error'] = exc.msg
        return report
    report['list_ok'] = report['ok'] = True
    return report


def check_checksum(backup_dir, entry):
    """The artifact's sha256, or ArtifactError when it is missing or differs from the
    manifest. (An unreadable disk raises OSError: no evidence about the artifact.)"""
    path = os.path.join(backup_dir, entry['file'])
    if not os.path.lexists(path):
        raise ArtifactError('file is missing')
    actual = artifact_sha256(path)
    if actual != entry.get('sha256'):
        raise ArtifactError('sha256 mismatch: manifest %s, file %s' % (entry.get('sha256'), actual))
    return actual


# --------------------------------------------------------------------------- connection probe

def probe(conn, database):
    """Connect to ``database``; return ``server_version`` (e.g. '15.8'). Raises a
    BackupError naming login_password / login_port / database on failure."""
    out = conn.psql('SHOW server_version', database, what='connecting to database %r' % database)
    return out.strip().split()[0] if out.strip() else ''


def database_exists(conn, params, name):
    out = conn.psql("SELECT 1 FROM pg_database WHERE datname = '%s'" % name.replace("'", "''"),
                    params['maintenance_db'], what='looking up database %r' % name)
    return out.strip() == '1'


def _ident(name):
    return '"%s"' % name.replace('"', '""')


def _literal(value):
    return "'%s'" % str(value).replace("'", "''")


# --------------------------------------------------------------------------- reconcile

DELETING = 'deleting'  # a prune's intent, recorded before it unlinks


def _remove_stale(backup_dir, database):
    return durable.remove_stale_temps(backup_dir, pattern=_temp_re(database))


def restore_marker_path(backup_dir, database):
    """Written (durably) before a restore into ``database`` creates its temporary database,
    removed once ``database`` is open again and nothing of the restore is left: a marker
    left behind means a killed restore may have closed it or left databases behind."""
    return os.path.join(backup_dir, '.pg_snapshot-%s.restore' % database)


def reconcile(conn, p, database):
    """Repair what a killed or failed run of ``database``'s jobs left, while holding that
    database's lock: after an interrupted restore reopen the database and drop the
    restore's temporary databases, remove temporaries,
    finish an interrupted prune, adopt whole snapshots the manifest does not list (a kill
    between the rename and the manifest write) and remove unlisted ones that fail their
    check. Returns what was done."""
    backup_dir = p['backup_dir']
    done = dict(stale_temps_removed=_remove_stale(backup_dir, database),
                reopened=False, leftover_databases_dropped=[],
                prune_finished=[], adopted=[], removed=[])
    if os.path.lexists(restore_marker_path(backup_dir, database)):
        done['reopened'], done['leftover_databases_dropped'] = \
            _finish_interrupted_restore(conn, p, database)
    manifest = Manifest(backup_dir)
    listed = manifest.load()
    unfinished = sorted(name for name, e in listed.items()
                        if e.get('kind') == KIND and e.get('database') == database
                        and e.get('status') == DELETING)
    adopted = {}
    pattern = _name_re(database)
    for name in sorted(os.listdir(backup_dir)):
        match = pattern.match(name)
        if not match or name in listed:
            continue
        try:  # outside the manifest's lock: other databases' jobs need not wait for this
            adopted[name] = _adopt(conn, backup_dir, database, name, match.group(1))
        except ArtifactError as exc:
            durable.discard(os.path.join(backup_dir, name))
            done['removed'].append(dict(file=name, reason=exc.msg))
    for name in unfinished:
        durable.discard(os.path.join(backup_dir, name))
    if unfinished or done['removed']:
        durable.fsync_dir(backup_dir)
    with manifest.update() as entries:  # also removes a killed manifest write's temporary
        for name in unfinished:
            entries.pop(name, None)
        for name, entry in adopted.items():
            entries.setdefault(name, entry)
    done['prune_finished'] = unfinished
    done['adopted'] = sorted(adopted)
    return done


def _adopt(conn, backup_dir, database, name, stamp):
    """A manifest entry for a whole snapshot found under its final name but not listed.
    Its row counts were never recorded, so a restore of it checks sha256 and the archive
    but cannot compare rows (``adopted`` says so)."""
    path = os.path.join(backup_dir, name)
    method = 'zstd' if name.endswith('.zst') else 'none'
    toc, header = check_archive(conn, path, method, database, full=True)
    if method == 'none' and header.get('Compression', '0') not in ('0', 'none'):
        method = 'gzip'
    return dict(file=name, time=stamp, kind=KIND, database=database, sha256=artifact_sha256(path),
                size_bytes=artifact_size(path), status='ok', adopted=True,
                verified_at=naming.format_timestamp(),
                format='directory' if os.path.isdir(path) else 'custom', compression=method,
                toc_entries=toc)


def _finish_interrupted_restore(conn, p, database):
    """A restore into ``database`` was killed: reopen it (the restore may have closed it
    to connections) and drop the restore's temporary databases. ``(reopened, dropped)``"""
    reopened = database_exists(conn, p, database)
    if reopened:
        conn.psql('ALTER DATABASE %s ALLOW_CONNECTIONS true' % _ident(database),
                  p['maintenance_db'],
                  what='reopening database %r after an interrupted restore' % database)
    dropped = _drop_leftovers(conn, p, database)
    durable.discard(restore_marker_path(p['backup_dir'], database))
    durable.fsync_dir(p['backup_dir'])
    return reopened, dropped


def _locked(p, database):
    return job_lock(lock_path(p['backup_dir'], database), 'pg_snapshot of database %s' % database,
                    wait=p['lock_timeout'])


# --------------------------------------------------------------------------- present

def _run_dump(conn, p, snapshot_id, temp):
    """pg_dump (| zstd) into ``temp``; raise on any failure of either tool."""
    method, level = p['_method'], p['_level']
    argv = [conn.tool('pg_dump'), '-w', '--dbname=%s' % p['database'],
            '--snapshot=%s' % snapshot_id]
    errs = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    try:
        if p['format'] == 'directory':
            durable.discard(temp)  # pg_dump creates the directory itself
            argv += ['-Fd', '-Z', str(level if method == 'gzip' else 0), '-j', str(p['jobs']),
                     '-f', temp]
            if conn.os_user and os.geteuid() == 0:
                raise BackupError('format directory cannot be combined with os_user: pg_dump '
                                  'would write the files as %s; connect with login_host and '
                                  'login_password instead' % conn.os_user, param='os_user')
            procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errs[0],
                                      **conn.popen_kwargs())]
        else:
            argv += ['-Fc', '-Z', str(level if method == 'gzip' else 0)]
            with open(temp, 'wb') as out:
                if method == 'zstd':
                    dump = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errs[0],
                                            **conn.popen_kwargs())
                    pack = subprocess.Popen([_zstd(), '-q', '-T0', '-%d' % level, '-c'],
                                            stdin=dump.stdout, stdout=out, stderr=errs[1],
                                            preexec_fn=process.die_with_parent)
                    dump.stdout.close()
                    procs = [dump, pack]
                else:
                    procs = [subprocess.Popen(argv, stdout=out, stderr=errs[0],
                                              **conn.popen_kwargs())]
        codes = [proc.wait() for proc in procs]
        if any(codes):
            errs[0].seek(0)
            errs[1].seek(0)
            text = (errs[0].read() + errs[1].read()).decode('utf-8', 'replace')
            raise connection_error(text, p, 'pg_dump of database %r' % p['database'],
                                   max(codes))
    except FileNotFoundError as exc:
        raise BackupError('%s is not installed (needed for compression %s)'
                          % (exc.filename, p['compression']), param='compression')
    finally:
        for handle in errs:
            handle.close()


def snapshot(params, check_mode=False, now=None):
    """``state: present``: dump one database, check it, record it, then prune."""
    p = check_options(params)
    conn = Connection(p)
    db, backup_dir = p['database'], p['backup_dir']
    with Job(PURPOSES[p['purpose']], db, p['metrics_dir'], check_mode,
             what='pg_snapshot of database %r' % db) as job:
        try:  # before anything is written: a bad connection leaves no trace
            server_version = probe(conn, db)
        except BackupError:
            if check_mode or not os.path.lexists(restore_marker_path(backup_dir, db)):
                raise
            server_version = None  # closed by an interrupted restore: reconcile reopens it
        if check_mode:
            taken = set(e['time'] for e in _entries_for(Manifest(backup_dir), db)) \
                if os.path.isdir(backup_dir) else set()
            stamp = naming.unique_timestamp(taken, now)
            prune_plan, _condemned = _plan_prune(p, now, extra_newest=True)
            return dict(changed=True, database=db, server_version=server_version,
                        file=snapshot_name(db, stamp, p['_method']),
                        path=os.path.join(backup_dir, snapshot_name(db, stamp, p['_method'])),
                        format=p['format'], compression=p['compression'], purpose=p['purpose'],
                        pruned=[e['file'] for e in prune_plan], size_bytes=0,
                        duration_seconds=job.duration())
        durable.ensure_dir(backup_dir, 0o700)
        with _locked(p, db):
            repaired = reconcile(conn, p, db)
            server_version = server_version or probe(conn, db)
            manifest = Manifest(backup_dir)
            taken = set(e['time'] for e in _entries_for(manifest, db))
            stamp = naming.unique_timestamp(taken, now)
            name = snapshot_name(db, stamp, p['_method'])
            final = os.path.join(backup_dir, name)
            session = conn.open_session(db)
            try:
                session.query_lines('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY',
                                    'starting the snapshot transaction')
                snap = session.query_lines('SELECT pg_export_snapshot()',
                                           'exporting the snapshot of database %r' % db)[0]
                with durable.atomic_path(final) as temp:
                    # Count rows in pg_dump's own snapshot while it runs (same MVCC view).
                    session.send(ROW_COUNT_SQL)
                    _run_dump(conn, p, snap, temp)
                    # zstd exited 0, so its frames are whole; check the archive's TOC.
                    toc = check_archive(conn, temp, p['_method'], db, full=False)[0]
                    digest = artifact_sha256(temp)
                    size = artifact_size(temp)
                    tables = _parse_counts(session.read('counting rows'))
                    large_objects = int(session.query_lines(LARGE_OBJECT_SQL,
                                                            'counting large objects')[0])
            finally:
                session.close()
            duration = job.duration()
            entry = dict(file=name, time=stamp, kind=KIND, database=db, sha256=digest,
                         size_bytes=size, duration_seconds=duration, status='ok',
                         verified_at=naming.format_timestamp(), format=p['format'],
                         compression=p['compression'], server_version=server_version,
                         pg_dump_version=_tool_version(conn, 'pg_dump'), toc_entries=toc,
                         tables=tables, large_objects=large_objects, purpose=p['purpose'])
            with manifest.update() as entries:
                entries[name] = entry
            pruned, condemned = _prune_locked(p, now, fresh=(name,))
        job.size = size
        return dict(changed=True, database=db, file=name, path=final, sha256=digest,
                    size_bytes=size, duration_seconds=duration, server_version=server_version,
                    format=p['format'], compression=p['compression'], tables=tables,
                    large_objects=large_objects, toc_entries=toc, purpose=p['purpose'],
                    pruned=[e['file'] for e in pruned], failed_verification=condemned,
                    stale_temps_removed=repaired['stale_temps_removed'], reconciled=repaired)


def _parse_counts(lines):
    counts = {}
    for line in lines:
        name, _sep, count = line.rpartition('|')
        counts[name] = int(count)
    return counts


def _tool_version(conn, name):
    try:
        out = subprocess.run([conn.tool(name), '--version'], capture_output=True, text=True,
                             check=False).stdout
    except OSError:
        return ''
    return out.strip().split()[-1] if out.strip() else ''


# --------------------------------------------------------------------------- pruned

def _plan_prune(p, now=None, extra_newest=False, fresh=(), record=False):
    """``(delete, condemned)``. Before anything older is deleted, the snapshots retention
    would keep as the newest ``keep_min`` good ones are checked against their sha256; one
    that fails is ``condemned`` (no longer counted as good, marked in the manifest when
    ``record``) and the plan is made again, so a silently corrupted newest snapshot never
    lets a good older one go. ``fresh`` names snapshots hashed by this very run."""
    if not os.path.isdir(p['backup_dir']):
        return [], []
    manifest = Manifest(p['backup_dir'])
    entries = _entries_for(manifest, p['database'])
    if extra_newest:  # check mode of present: the snapshot about to be made counts as newest
        entries = entries + [dict(file='(new)', time=naming.format_timestamp(now), status='ok')]
    condemned, checked = [], set(fresh) | {'(new)'}
    while True:
        keep, delete = plan_retention(entries, now or naming.utcnow(),
                                      max_age=datetime.timedelta(days=p['keep_days']),
                                      keep_min=p['keep_min'])
        if not delete:
            return delete, condemned
        protected = [e for e in keep if is_good(e)][:p['keep_min']]
        bad = []
        for entry in protected:
            if entry['file'] in checked:
                continue
            checked.add(entry['file'])
            try:
                check_checksum(p['backup_dir'], entry)
            except ArtifactError as exc:
                bad.append(dict(file=entry['file'], error=exc.msg))
                entry['status'] = 'failed_verification'
        if not bad:
            return delete, condemned
        condemned += bad
        if record:
            with manifest.update() as recorded:
                for item in bad:
                    if item['file'] in recorded:
                        recorded[item['file']].update(status='failed_verification',
                                                      verification_error=item['error'],
                                                      verified_at=naming.format_timestamp())


def _prune_locked(p, now=None, fresh=()):
    """Delete what retention allows, as a recorded intent: mark the entries ``deleting``,
    unlink the files, drop the entries. A prune killed in between is finished by the next
    run's reconcile; no entry ever counts as good while its file is being removed."""
    delete, condemned = _plan_prune(p, now, fresh=fresh, record=True)
    if not delete:
        return [], condemned
    manifest = Manifest(p['backup_dir'])
    names = sorted(set(e['file'] for e in delete))
    with manifest.update() as entries:
        for name in names:
            if name in entries:
                entries[name]['status'] = DELETING
    for name in names:
        durable.discard(os.path.join(p['backup_dir'], name))
    durable.fsync_dir(p['backup_dir'])
    with manifest.update() as entries:
        for name in names:
            entries.pop(name, None)
    return delete, condemned


def prune(params, check_mode=False, now=None):
    """``state: pruned``: keep ``keep_days`` days, never fewer than ``keep_min`` good ones."""
    p = check_options(params)
    db = p['database']
    with Job(KIND_PRUNE, db, p['metrics_dir'], check_mode,
             what='pruning snapshots of database %r' % db) as job:
        repaired = None
        if check_mode or not os.path.isdir(p['backup_dir']):
            delete, condemned = _plan_prune(p, now)
        else:
            with _locked(p, db):
                repaired = reconcile(Connection(p), p, db)
                delete, condemned = _prune_locked(p, now)
        kept = [e['file'] for e in _entries_for(Manifest(p['backup_dir']), db)] \
            if os.path.isdir(p['backup_dir']) else []
        deleted = set(e['file'] for e in delete)
        job.size = sum(e.get('size_bytes') or 0 for e in delete)
        return dict(changed=bool(delete or condemned or repaired and any(repaired.values())),
                    database=db,
                    pruned=[dict(file=e['file'], time=e['time'], reason=e['reason'])
                            for e in delete],
                    kept=[name for name in kept if name not in deleted],
                    failed_verification=condemned, reconciled=repaired, size_bytes=job.size,
                    duration_seconds=job.duration())


# --------------------------------------------------------------------------- verified

def verify(params, check_mode=False):
    """``state: verified``: re-check the named, latest or ``all`` snapshots. The manifest
    status becomes ``failed_verification`` only on evidence against a snapshot (sha256,
    size, the archive's own check); a missing tool or an unreadable disk fails the run and
    changes no status."""
    p = check_options(params)
    conn = Connection(p)
    db, backup_dir = p['database'], p['backup_dir']
    with Job(KIND_VERIFY, db, p['metrics_dir'], check_mode,
             what='verification of database %r snapshots' % db) as job:
        if not check_mode and os.path.isdir(backup_dir):
            with _locked(p, db):
                reconcile(conn, p, db)
        if p.get('snapshot') == 'all':
            chosen = _entries_for(Manifest(backup_dir), db) if os.path.isdir(backup_dir) else []
            if not chosen:
                raise BackupError('no snapshot of database %r in %s' % (db, backup_dir),
                                  param='snapshot')
        else:
            chosen = [select_entry(backup_dir, db, p.get('snapshot'), good_only=False)]
        # Long: runs without the lock, so the nightly snapshot need not wait for it.
        reports = [verify_entry(conn, backup_dir, entry) for entry in chosen]
        changed = False
        if not check_mode:
            stamp = naming.format_timestamp()
            with _locked(p, db):
                with Manifest(backup_dir).update() as entries:
                    for report in reports:
                        entry = entries.get(report['file'])
                        if entry is None or entry.get('status') == DELETING:
                            continue
                        status = 'ok' if report['ok'] else 'failed_verification'
                        changed = changed or entry.get('status', 'ok') != status
                        entry['status'] = status
                        entry['verified_at'] = stamp
                        if not report['ok']:
                            entry['verification_error'] = report.get('error')
                        else:
                            entry.pop('verification_error', None)
        else:
            changed = any(not r['ok'] for r in reports)
        bad = [r for r in reports if not r['ok']]
        job.size = sum(r.get('size_bytes') or 0 for r in reports)
        result = dict(changed=changed, database=db, snapshots=reports,
                      verified=not bad, duration_seconds=job.duration(), size_bytes=job.size)
        if bad:
            raise BackupError('%d of %d snapshot(s) of database %r failed verification: %s' % (
                len(bad), len(reports), db,
                '; '.join('%s: %s' % (r['file'], r['error']) for r in bad)),
                param='snapshot', **{k: v for k, v in result.items() if k != 'changed'})
        return result


# --------------------------------------------------------------------------- restored


def _helper_prefix(kind, target):
    return '_codeb_%s_%s_' % (kind, hashlib.sha1(target.encode()).hexdigest()[:8])


def _drop_leftovers(conn, p, target):
    """Drop temporary databases a killed restore of ``target`` left (under its lock)."""
    names = []
    for kind in ('rst', 'old'):
        prefix = _helper_prefix(kind, target)
        out = conn.psql("SELECT datname FROM pg_database WHERE starts_with(datname, %s)"
                        % _literal(prefix), p['maintenance_db'], what='listing leftovers')
        names += [n for n in out.splitlines() if n]
    for name in names:
        conn.psql('DROP DATABASE IF EXISTS %s WITH (FORCE)' % _ident(name), p['maintenance_db'],
                  what='dropping leftover database %r' % name)
    return names


def _restore_into(conn, p, path, method, database):
    """pg_restore ``path`` into the empty ``database`` with ``jobs`` workers."""
    pg_restore = conn.tool('pg_restore')
    base = ['--no-password', '--exit-on-error', '--dbname=%s' % database]
    kwargs = conn.popen_kwargs()
    if RESTORE_SESSION_SETTINGS:
        kwargs['env'] = dict(kwargs['env'], PGOPTIONS=' '.join(
            '-c %s=%s' % setting for setting in RESTORE_SESSION_SETTINGS))
    jobs = p['jobs']
    err = tempfile.TemporaryFile()
    scratch = None
    try:
        if method == 'zstd' and jobs > 1 or conn.os_user and os.geteuid() == 0 and jobs > 1:
            # pg_restore -j needs a seekable file it can open: decompress (or copy) next to
            # the snapshot, readable only by the restoring user.
            # Named after the snapshot, so a killed restore's leftover is removed as a stale
            # temporary of that database by the next run holding its lock.
            scratch = tempfile.mkdtemp(
                prefix='%s%s.restore-' % (durable.TEMP_PREFIX, os.path.basename(path)),
                dir=p['backup_dir'])
            plain = os.path.join(scratch, 'archive.dump')
            with open(plain, 'wb') as out:
                source = ['zstd', '-q', '-dc', path] if method == 'zstd' else ['cat', path]
                if subprocess.run(source, stdout=out, stderr=err, check=False).returncode:
                    err.seek(0)
                    raise BackupError('reading %s failed: %s' % (
                        path, err.read().decode('utf-8', 'replace')))
            target = plain
            if conn.os_user and os.geteuid() == 0:
                # The os_user cannot traverse the 0700 backup_dir: hand pg_restore an open
                # descriptor of its own copy; its workers reopen it through /proc/self/fd.
                import pwd
                entry = pwd.getpwnam(conn.os_user)
                os.chown(plain, entry.pw_uid, entry.pw_gid)
                fd = os.open(plain, os.O_RDONLY)
                kwargs['pass_fds'] = (fd,)
                target = '/proc/self/fd/%d' % fd
            try:
                code = subprocess.run([pg_restore] + base + ['-j', str(jobs), target],
                                      stderr=err, stdout=subprocess.DEVNULL, check=False,
                                      **kwargs).returncode
            finally:
                if 'pass_fds' in kwargs:
                    os.close(kwargs['pass_fds'][0])
        elif method == 'zstd' or conn.os_user and os.geteuid() == 0 and os.path.isfile(path):
            source = ['zstd', '-q', '-dc', path] if method == 'zstd' else ['cat', path]
            feed = subprocess.Popen(source, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    preexec_fn=process.die_with_parent)
            code = subprocess.run([pg_restore] + base, stdin=feed.stdout, stderr=err,
                                  stdout=subprocess.DEVNULL, check=False, **kwargs).returncode
            feed.stdout.close()
            code = code or feed.wait()
        else:
            code = subprocess.run([pg_restore] + base + ['-j', str(jobs), path], stderr=err,
                                  stdout=subprocess.DEVNULL, check=False, **kwargs).returncode
        if code:
            err.seek(0)
            raise connection_error(err.read().decode('utf-8', 'replace'), p,
                                   'pg_restore into temporary database %r' % database, code)
    finally:
        err.close()
        if scratch:
            durable.discard(scratch)


def restore(params, check_mode=False):
    """``state: restored``: verify, restore into a fresh database, check row counts, swap."""
    p = check_options(params)
    conn = Connection(p)
    db, target, backup_dir = p['database'], p['target_database'], p['backup_dir']
    with Job(KIND_RESTORE, target, p['metrics_dir'], check_mode,
             what='restore of database %r' % target) as job:
        entry = select_entry(backup_dir, db, p.get('snapshot'), good_only=True)
        path = os.path.join(backup_dir, entry['file'])
        method = (entry.get('compression') or 'none').split(':')[0]
        report = verify_entry(conn, backup_dir, entry, full=False)
        verify_seconds = job.duration()
        if not report['ok']:
            if not check_mode:
                with Manifest(backup_dir).update() as entries:
                    if entry['file'] in entries:
                        entries[entry['file']]['status'] = 'failed_verification'
                        entries[entry['file']]['verification_error'] = report['error']
            raise BackupError('refusing to restore %s: %s. The live database %r was not touched; '
                              'pick another snapshot (state: verified, snapshot: all lists them)'
                              % (entry['file'], report['error'], target), param='snapshot',
                              verification=report)
        probe(conn, p['maintenance_db'])
        exists = database_exists(conn, p, target)
        if check_mode:
            return dict(changed=True, database=db, target_database=target, file=entry['file'],
                        sha256=entry['sha256'], replaced_existing=exists,
                        size_bytes=entry.get('size_bytes'), duration_seconds=job.duration(),
                        msg='would restore %s into %s' % (entry['file'], target))
        first, last = sorted(set([db, target]))[0], sorted(set([db, target]))[-1]
        with _locked(p, first), (_locked(p, last) if last != first else _nullcontext()):
            repaired = [reconcile(conn, p, name) for name in sorted(set([db, target]))]
            result = _restore_locked(conn, p, entry, path, method, exists)
        job.size = entry.get('size_bytes')
        result.update(duration_seconds=job.duration(), size_bytes=job.size, reconciled=repaired)
        result['timings']['verify_seconds'] = verify_seconds
        return result


class _nullcontext(object):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _restore_locked(conn, p, entry, path, method, exists):
    db, target, maint = p['database'], p['target_database'], p['maintenance_db']
    timings = {}
    leftovers = _drop_leftovers(conn, p, target)
    suffix = os.urandom(3).hex()
    temp_db = _helper_prefix('rst', target) + suffix
    old_db = _helper_prefix('old', target) + suffix
    options = ''
    if exists:
        row = conn.psql(
            "SELECT pg_encoding_to_char(encoding) || '|' || datcollate || '|' || datctype "
            "|| '|' || pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s"
            % _literal(target), maint, what='reading database %r settings' % target).strip()
        encoding, collate, ctype, owner = row.split('|')
        options = ' ENCODING %s LC_COLLATE %s LC_CTYPE %s OWNER %s' % (
            _literal(encoding), _literal(collate), _literal(ctype), _ident(owner))
    marker = restore_marker_path(p['backup_dir'], target)
    durable.atomic_write_json(marker, dict(database=target, pid=os.getpid(),
                                           time=naming.format_timestamp()))
    conn.psql('CREATE DATABASE %s TEMPLATE template0%s' % (_ident(temp_db), options), maint,
              what='creating temporary database %r' % temp_db)
    swapped = cleaned = False
    try:
        step = time.monotonic()
        _restore_into(conn, p, path, method, temp_db)
        timings['pg_restore_seconds'] = round(time.monotonic() - step, 3)
        step = time.monotonic()
        counts = _parse_counts(conn.psql(ROW_COUNT_SQL, temp_db, 'counting restored rows')
                               .splitlines())
        large_objects = int(conn.psql(LARGE_OBJECT_SQL, temp_db, 'counting large objects'))
        row_check = _compare_rows(entry, counts, large_objects, target)
        timings['row_check_seconds'] = round(time.monotonic() - step, 3)
        step = time.monotonic()
        if exists:
            _replace(conn, p, target, old_db, temp_db)
        else:
            conn.psql(_durable('ALTER DATABASE %s RENAME TO %s' % (_ident(temp_db),
                                                                   _ident(target))), maint,
                      what='renaming the restored database to %r' % target)
        swapped = True
    finally:
        try:
            if not swapped:
                conn.psql('DROP DATABASE IF EXISTS %s WITH (FORCE)' % _ident(temp_db), maint,
                          what='dropping temporary database %r' % temp_db)
            cleaned = True
        finally:  # the marker goes only when nothing of the restore is left to repair
            if cleaned and not _closed(conn, p, target):
                durable.discard(marker)
                durable.fsync_dir(p['backup_dir'])
    timings['swap_seconds'] = round(time.monotonic() - step, 3)
    return dict(changed=True, database=db, target_database=target, file=entry['file'],
                time=entry['time'], sha256=entry['sha256'], replaced_existing=exists,
                timings=timings, row_check=row_check,
                tables=counts, large_objects=large_objects, leftovers_dropped=leftovers)


def _compare_rows(entry, counts, large_objects, target):
    if entry.get('adopted') and 'tables' not in entry:
        return 'skipped: adopted snapshot, its row counts were never recorded'
    expected = entry.get('tables') or {}
    mismatch = ['%s: snapshot %s, restored %s' % (t, expected.get(t), counts.get(t))
                for t in sorted(set(expected) | set(counts)) if expected.get(t) != counts.get(t)]
    if mismatch:
        raise BackupError('restored data of %s does not match its manifest (%s); the live '
                          'database %r was not touched' % (entry['file'], '; '.join(mismatch[:5]),
                                                           target))
    if large_objects != int(entry.get('large_objects') or 0):
        raise BackupError('restored %d large objects, the snapshot recorded %s'
                          % (large_objects, entry.get('large_objects')))
    return 'ok'


def _replace(conn, p, target, old_db, temp_db):
    """Swap the restored ``temp_db`` in as ``target`` (the caller's restore marker lets a
    killed run's successor reopen ``target``); if any step after the swap fails, the
    original is put back."""
    maint = p['maintenance_db']
    conn.psql('ALTER DATABASE %s ALLOW_CONNECTIONS false' % _ident(target), maint,
              what='closing database %r to new connections' % target)
    swapped = False
    try:
        conn.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                  "datname = %s AND pid <> pg_backend_pid()" % _literal(target), maint,
                  what='disconnecting sessions of %r' % target)
        _swap(conn, maint, target, aside=old_db, incoming=temp_db)
        swapped = True
        conn.psql('DROP DATABASE %s WITH (FORCE)' % _ident(old_db), maint,
                  what='dropping the replaced database')
    except BaseException as exc:
        if swapped:  # the restored copy is live: put the original back under its name
            _swap(conn, maint, target, aside=temp_db, incoming=old_db)
            if isinstance(exc, BackupError):
                exc.msg = '%s; the original database %r was put back' % (exc.msg, target)
                exc.args = (exc.msg,)
        conn.psql('ALTER DATABASE %s ALLOW_CONNECTIONS true' % _ident(target), maint,
                  what='reopening database %r' % target)
        raise


def _closed(conn, p, database):
    try:
        out = conn.psql('SELECT NOT datallowconn FROM pg_database WHERE datname = %s'
                        % _literal(database), p['maintenance_db'], what='reading datallowconn')
    except BackupError:
        return True  # cannot tell: keep the marker, the next run checks again
    return out.strip() == 't'


def _durable(statements):
    """``statements`` in one transaction whose commit waits for the local WAL flush even if
    the server, role or database sets ``synchronous_commit=off``: WAL is flushed in order,
    so every row, index and commit the restore wrote before (with RESTORE_SESSION_SETTINGS'
    asynchronous commits) is durable before the restored database takes the target's name.
    Only ``off`` is raised (to ``local``): a configured wait for synchronous standbys is
    kept, and none is added where the server has chosen not to wait for them."""
    return ("BEGIN; SELECT set_config('synchronous_commit', 'local', true) "
            "WHERE current_setting('synchronous_commit') = 'off'; %s; COMMIT;" % statements)


def _swap(conn, maint, target, aside, incoming):
    """Rename ``target`` to ``aside`` and ``incoming`` to ``target`` in one transaction: the
    target name always names a whole database."""
    last = None
    for _attempt in range(5):
        try:
            conn.psql(_durable('ALTER DATABASE %s RENAME TO %s; ALTER DATABASE %s RENAME TO %s'
                               % (_ident(target), _ident(aside), _ident(incoming),
                                  _ident(target))), maint,
                      what='swapping %r in as %r' % (incoming, target))
            return
        except BackupError as exc:  # a session that was just terminating
            last = exc
            if 'being accessed by other users' not in exc.msg:
                raise
            conn.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                      "datname = %s AND pid <> pg_backend_pid()" % _literal(target), maint,
                      what='disconnecting sessions of %r' % target)
            time.sleep(0.5)
    raise last


# --------------------------------------------------------------------------- dispatch

def run_state(params, check_mode=False):
    state = params.get('state') or 'present'
    if state not in STATES:
        raise BackupError('state must be one of %s; got %r' % (', '.join(STATES), state),
                          param='state')
    if state == 'present':
        return snapshot(params, check_mode)
    if state == 'verified':
        return verify(params, check_mode)
    if state == 'restored':
        return restore(params, check_mode)
    return prune(params, check_mode)


# --------------------------------------------------------------------------- host CLI

def _read_password(args):
    if getattr(args, 'login_password_file', None):
        path = args.login_password_file
        try:
            mode = os.stat(path).st_mode & 0o077
            if mode:
                raise BackupError('login_password_file %s is readable by group/others; '
                                  'chmod 600 it' % path, param='login_password_file')
            with open(path) as handle:
                return handle.read().strip()
        except OSError as exc:
            raise BackupError('cannot read login_password_file %s: %s' % (path, exc),
                              param='login_password_file')
    return os.environ.get('CODEB_PG_PASSWORD') or None


def _cli_params(args):
    return dict(
        state=getattr(args, 'state', 'present'), database=args.database,
        target_database=getattr(args, 'target_database', None), backup_dir=args.backup_dir,
        format=getattr(args, 'format', None), compression=getattr(args, 'compression', None),
        jobs=getattr(args, 'jobs', None), keep_days=args.keep_days, keep_min=args.keep_min,
        snapshot=getattr(args, 'snapshot', None), purpose=getattr(args, 'purpose', None),
        allow_postgres_database=getattr(args, 'allow_postgres_database', False),
        login_host=args.login_host,
        login_port=args.login_port, login_user=args.login_user,
        login_unix_socket=args.login_unix_socket, login_password=_read_password(args),
        maintenance_db=args.maintenance_db, os_user=args.os_user, pg_bin_dir=args.pg_bin_dir,
        lock_timeout=args.lock_timeout, metrics_dir=args.metrics_dir)


def _cli_snapshot(args):
    return run_state(_cli_params(args))


def _cli_list(args):
    snapshots = list_snapshots(args.backup_dir, args.database)
    return dict(changed=False, backup_dir=args.backup_dir, snapshots=snapshots,
                size_bytes=sum(s.get('size_bytes') or 0 for s in snapshots))


def register_cli(subparsers):
    cmd = subparsers.add_parser(
        'pg-snapshot', help='snapshot, verify, restore or prune one PostgreSQL database',
        allow_abbrev=False,
        description='Per-database pg_dump snapshots with manifest, sha256, verification, '
                    'restore-by-swap and retention. The password comes from '
                    '--login-password-file (mode 0600), $CODEB_PG_PASSWORD or ~/.pgpass; '
                    'never from the command line.')
    cmd.add_argument('--state', choices=STATES, default='present')
    cmd.add_argument('--database', required=True)
    cmd.add_argument('--target-database', help='restore into this database (default: --database)')
    cmd.add_argument('--snapshot', help='latest (default), all (verified only), a file name '
                                        'or a timestamp')
    cmd.add_argument('--format', choices=FORMATS, default=DEFAULT_FORMAT)
    cmd.add_argument('--compression', default=DEFAULT_COMPRESSION,
                     help='none, gzip[:1-9], zstd[:1-19] (default %s)' % DEFAULT_COMPRESSION)
    cmd.add_argument('--jobs', type=int, default=DEFAULT_JOBS)
    cmd.add_argument('--purpose', choices=sorted(PURPOSES), default=DEFAULT_PURPOSE,
                     help='scheduled (metrics kind pg_snapshot) or safety (deploy/rollback '
                          'snapshots, metrics kind pg_snapshot_safety)')
    cmd.add_argument('--allow-postgres-database', action='store_true',
                     help='allow --state restored to replace the postgres database')
    _common_cli_args(cmd)
    cmd.set_defaults(handler=_cli_snapshot)

    lst = subparsers.add_parser('pg-snapshot-list', help='list PostgreSQL snapshots',
                                allow_abbrev=False,
                                description='List the snapshots in the manifest, newest first.')
    lst.add_argument('--database', help='only this database')
    lst.add_argument('--backup-dir', default=DEFAULT_BACKUP_DIR)
    lst.set_defaults(handler=_cli_list)


def _common_cli_args(cmd):
    cmd.add_argument('--backup-dir', default=DEFAULT_BACKUP_DIR)
    cmd.add_argument('--keep-days', type=int, default=DEFAULT_KEEP_DAYS)
    cmd.add_argument('--keep-min', type=int, default=DEFAULT_KEEP_MIN)
    cmd.add_argument('--login-host', default='')
    cmd.add_argument('--login-port', type=int, default=5432)
    cmd.add_argument('--login-user', default='postgres')
    cmd.add_argument('--login-unix-socket', default='')
    cmd.add_argument('--login-password-file', help='file (mode 0600) holding the password')
    cmd.add_argument('--maintenance-db', default='postgres')
    cmd.add_argument('--os-user', help='run the PostgreSQL tools as this OS user (peer auth)')
    cmd.add_argument('--pg-bin-dir', default=DEFAULT_PG_BIN_DIR)
    cmd.add_argument('--lock-timeout', type=float, default=DEFAULT_LOCK_TIMEOUT)
    cmd.add_argument('--metrics-dir', default=metrics.DEFAULT_TEXTFILE_DIR)
