# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The versioned store of app ``.env`` files (the seed's ``env-backup`` layout).

Layout, exactly the seed's::

    {root}/{project}/{environment}/master.env             first version, never modified
    {root}/{project}/{environment}/current.env            the latest version
    {root}/{project}/{environment}/YYYY-MM-DDTHH:MM:SS.env  every version (UTC)
    {root}/{project}/{environment}/backup-log.json        the history: the commit point

Directories are 0700, files 0600. ``backup-log.json`` lists every version with its time,
trigger, sha256 and the *names* of keys added, removed and changed (never values).

Crash consistency. All writes of one project/environment happen under one lock, in this
order: (1) the version file (temp name, fsync, rename), (2) the log entry (atomic rewrite
of backup-log.json: the commit point), (3) master.env on the first version, (4)
current.env. A run killed at any point leaves every file whole (atomic renames); the
history readers see is the log, so a version file without a log entry is invisible, and
the next writing run removes it under the lock and rewrites a stale current.env or a
missing master.env from the committed versions. A log entry never names a file that is
not there, because the file is renamed into place before the log is written.
"""

from __future__ import annotations

import datetime
import grp
import hashlib
import json
import os
import pwd
import re
import stat
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable, envfile, metrics, naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.locking import DEFAULT_WAIT, job_lock

DEFAULT_ROOT = '/opt/codeb/env-backup'
DEFAULT_ENVIRONMENT = 'production'
TRIGGERS = ('set', 'deploy', 'daily', 'manual')
MASTER = 'master.env'
CURRENT = 'current.env'
LOG = 'backup-log.json'
LOCK = '.env-backup.lock'
LOG_FORMAT = 1
METRICS_KIND = 'env'
METRICS_KIND_RESTORE = 'env_restore'
FILE_MODE = 0o600
DIR_MODE = 0o700
_VERSION_FILE_RE = re.compile(r'\A(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\.env\Z')
_AVAILABLE_SHOWN = 30

# Test-only hook: when CODEB_BACKUP_TEST_PAUSE_AT names a step below, the run touches the
# file named by CODEB_BACKUP_TEST_PAUSE_FILE and sleeps there, so a test can kill -9 it at
# an exact point of the real write path. Steps: version_temp (version bytes written to the
# temp name, not yet renamed), version_written, log_committed, master_written,
# current_written. Never set these in production.
PAUSE_ENV = 'CODEB_BACKUP_TEST_PAUSE_AT'
PAUSE_FILE_ENV = 'CODEB_BACKUP_TEST_PAUSE_FILE'


def _test_pause(step):
    if os.environ.get(PAUSE_ENV) != step:
        return
    marker = os.environ.get(PAUSE_FILE_ENV)
    if marker:
        with open(marker, 'w') as handle:
            handle.write(step)
    while True:
        time.sleep(3600)


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _validate_root(root):
    if not isinstance(root, str) or not root or not os.path.isabs(root):
        raise BackupError('root must be an absolute path; got %r' % (root,), param='root')
    return os.path.normpath(root)


def _target(project, environment):
    return '%s/%s' % (project, environment)


class EnvStore(object):
    """One project/environment of the store. Names are validated on construction."""

    def __init__(self, root, project, environment=DEFAULT_ENVIRONMENT):
        self.root = _validate_root(root)
        self.project = naming.validate_name('project', project)
        self.environment = naming.validate_name('environment', environment)
        self.path = os.path.join(self.root, self.project, self.environment)
        self.log_path = os.path.join(self.path, LOG)
        self.target = _target(self.project, self.environment)

    def file(self, name):
        return os.path.join(self.path, name)

    # ---- reading (no lock needed: every file is replaced atomically) ----

    def exists(self):
        return os.path.isdir(self.path)

    def entries(self):
        """Committed versions, oldest first (log order). Missing log: none."""
        try:
            with open(self.log_path, 'rb') as handle:
                raw = handle.read()
        except FileNotFoundError:
            return []
        try:
            data = json.loads(raw.decode('utf-8'))
        except ValueError as exc:
            raise BackupError('%s is not valid JSON (%s); nothing was changed. Inspect it or '
                              'move the store aside.' % (self.log_path, exc))
        if (not isinstance(data, dict) or data.get('format') != LOG_FORMAT
                or not isinstance(data.get('versions'), list)):
            raise BackupError('%s has an unknown layout (not written by codeb.backup format %d); '
                              'nothing was changed.' % (self.log_path, LOG_FORMAT))
        return data['versions']

    def available(self, entries=None):
        entries = self.entries() if entries is None else entries
        names = [e['version'] for e in entries]
        return (['master', 'current'] if names else []) + names

    def resolve(self, version, entries=None):
        """The log entry for ``master``, ``current``, a timestamp or ``<timestamp>.env``."""
        entries = self.entries() if entries is None else entries
        if not isinstance(version, str):
            raise BackupError('version must be master, current or a timestamp like '
                              '2026-01-07T10:30:00; got %r' % (version,), param='version')
        wanted = version[:-4] if version.endswith('.env') and version != '.env' else version
        found = None
        if entries and wanted == 'master':
            found = entries[0]
        elif entries and wanted == 'current':
            found = entries[-1]
        else:
            for entry in entries:
                if entry['version'] == wanted:
                    found = entry
        if found is None:
            avail = self.available(entries)
            if not avail:
                raise BackupError('version %r: %s has no versions yet (nothing backed up for '
                                  'project %s, environment %s)'
                                  % (version, self.path, self.project, self.environment),
                                  param='version', available=[])
            shown = avail[:2] + avail[2:][-_AVAILABLE_SHOWN:]
            more = len(avail) - len(shown)
            raise BackupError('version %r is unknown for %s; available: %s%s'
                              % (version, self.target, ', '.join(shown),
                                 ' (and %d older)' % more if more else ''),
                              param='version', available=avail)
        return found

    def read_version(self, entry, name=None):
        """The bytes of a committed version, verified against its logged sha256."""
        path = self.file(name or entry['file'])
        try:
            with open(path, 'rb') as handle:
                data = handle.read()
        except FileNotFoundError:
            raise BackupError('%s is listed in %s but missing; the store is damaged'
                              % (path, LOG))
        if _sha256(data) != entry['sha256']:
            raise BackupError('%s does not match its sha256 in %s (expected %s, found %s); '
                              'refusing to use it' % (path, LOG, entry['sha256'], _sha256(data)))
        return data

    def listing(self, verify=False):
        """Versions with time, trigger, sha256 and changed key names, plus the store's files
        with their actual sha256 (what a replica is compared with)."""
        entries = self.entries() if self.exists() else []
        files = []
        problems = []
        if entries:
            expected = [(e['file'], e['sha256']) for e in entries]
            expected.append((MASTER, entries[0]['sha256']))
            expected.append((CURRENT, entries[-1]['sha256']))
            for name, sha in expected:
                path = self.file(name)
                try:
                    actual = durable.sha256_file(path)
                    size = os.path.getsize(path)
                except FileNotFoundError:
                    problems.append('%s is missing' % name)
                    continue
                if actual != sha:
                    problems.append('%s: sha256 %s, expected %s' % (name, actual, sha))
                files.append(dict(name=name, sha256=actual, size_bytes=size))
            files.append(dict(name=LOG, sha256=durable.sha256_file(self.log_path),
                              size_bytes=os.path.getsize(self.log_path)))
        if verify and problems:
            raise BackupError('env store %s failed verification: %s'
                              % (self.path, '; '.join(problems)), problems=problems)
        result = dict(
            project=self.project, environment=self.environment, store_path=self.path,
            exists=self.exists(), versions=entries, count=len(entries),
            current=entries[-1]['version'] if entries else None,
            master=entries[0]['version'] if entries else None,
            files=files, problems=problems, verified=bool(verify),
        )
        if not result['exists']:
            project_dir = os.path.join(self.root, self.project)
            result['available_environments'] = (sorted(os.listdir(project_dir))
                                                if os.path.isdir(project_dir) else [])
        return result

    # ---- writing (always under the lock) ----

    def _lock(self, wait):
        return job_lock(self.file(LOCK), 'env backup of %s' % self.target, wait=wait)

    def _ensure_dirs(self):
        created = False
        for path in (self.root, os.path.join(self.root, self.project), self.path):
            if durable.ensure_dir(path, DIR_MODE):
                created = True
            elif stat.S_IMODE(os.stat(path).st_mode) != DIR_MODE:
                os.chmod(path, DIR_MODE)
                created = True
        return created

    def recover(self):
        """Repair what a killed run left. Call only under the lock. Returns what was done."""
        done = []
        for name in durable.remove_stale_temps(self.path):
            done.append('removed temporary %s' % name)
        entries = self.entries()
        committed = set(e['file'] for e in entries)
        for name in sorted(os.listdir(self.path)):
            if _VERSION_FILE_RE.match(name) and name not in committed:
                os.unlink(self.file(name))
                done.append('removed uncommitted version %s' % name)
        if done:
            durable.fsync_dir(self.path)
        if not entries:
            for name in (MASTER, CURRENT):
                if os.path.exists(self.file(name)):
                    raise BackupError('%s has %s but no %s: it was not written by codeb.backup '
                                      'or is damaged; nothing was changed. Move it aside.'
                                      % (self.path, name, LOG))
            return done
        if not os.path.exists(self.file(MASTER)):
            durable.atomic_write_bytes(self.file(MASTER), self.read_version(entries[0]), FILE_MODE)
            done.append('wrote missing %s' % MASTER)
        last = entries[-1]
        try:
            current_sha = durable.sha256_file(self.file(CURRENT))
        except FileNotFoundError:
            current_sha = None
        if current_sha != last['sha256']:
            durable.atomic_write_bytes(self.file(CURRENT), self.read_version(last), FILE_MODE)
            done.append('rewrote %s from %s' % (CURRENT, last['file']))
        return done

    def _new_stamp(self, entries):
        """A UTC timestamp after the last version's (a clock step back never reorders
        history) and not taken by any version."""
        moment = naming.utcnow()
        if entries:
            last = naming.parse_timestamp('time', entries[-1]['version'])
            if moment.replace(microsecond=0) <= last:
                moment = last + datetime.timedelta(seconds=1)
        return naming.unique_timestamp(set(e['version'] for e in entries), moment)

    def _commit(self, data, trigger, entries, changes, source):
        stamp = self._new_stamp(entries)
        name = stamp + '.env'
        final = self.file(name)
        with durable.atomic_path(final, FILE_MODE) as temp:
            with open(temp, 'wb') as handle:
                handle.write(data)
            _test_pause('version_temp')
        _test_pause('version_written')
        entry = dict(version=stamp, file=name, time=stamp, trigger=trigger, sha256=_sha256(data),
                     size_bytes=len(data), master=not entries, source=source,
                     keys=len(envfile.parse_bytes(data).to_dict()), **changes)
        log = dict(format=LOG_FORMAT, project=self.project, environment=self.environment,
                   versions=entries + [entry])
        durable.atomic_write_json(self.log_path, log, FILE_MODE)
        _test_pause('log_committed')
        if not entries:
            durable.atomic_write_bytes(self.file(MASTER), data, FILE_MODE)
            _test_pause('master_written')
        durable.atomic_write_bytes(self.file(CURRENT), data, FILE_MODE)
        _test_pause('current_written')
        return entry

    def record(self, data=None, values=None, trigger='manual', source=None, check_mode=False,
               lock_timeout=DEFAULT_WAIT):
        """Record ``data`` (bytes) as a new version, or apply ``values`` to the current
        version; nothing happens when the result equals the current version."""
        if trigger not in TRIGGERS:
            raise BackupError('trigger must be one of %s; got %r' % (', '.join(TRIGGERS), trigger),
                              param='trigger')
        # a dry run first: bad input fails here, before anything is created
        prediction = self._record(data, values, trigger, source, True, [])
        if check_mode:
            return prediction
        self._ensure_dirs()
        with self._lock(lock_timeout):
            repaired = self.recover()
            return self._record(data, values, trigger, source, False, repaired)

    def _record(self, data, values, trigger, source, check_mode, repaired):
        entries = self.entries() if self.exists() else []
        before_bytes = self.read_version(entries[-1]) if entries else b''
        before = envfile.parse_bytes(before_bytes).to_dict() if entries else {}
        if values is not None:
            edited = envfile.parse_bytes(before_bytes)
            edited.apply(values)
            data = edited.to_bytes()
        parsed = envfile.parse_bytes(data)
        after = parsed.to_dict()
        changes = envfile.key_changes(before, after)
        sha = _sha256(data)
        result = dict(project=self.project, environment=self.environment, store_path=self.path,
                      trigger=trigger, sha256=sha, size_bytes=len(data), repaired=repaired,
                      invalid_lines=parsed.invalid_lines(), master_created=False,
                      diff=envfile.masked_diff(before, after,
                                               '%s (current)' % self.target,
                                               '%s (new version)' % self.target), **changes)
        if entries and sha == entries[-1]['sha256']:
            result.update(changed=bool(repaired), version=entries[-1]['version'],
                          file=entries[-1]['file'], created=False)
            return result
        result.update(changed=True, created=True, master_created=not entries)
        if check_mode:
            result.update(version=None, file=None)
            return result
        entry = self._commit(data, trigger, entries, changes, source)
        result.update(version=entry['version'], file=entry['file'])
        return result


def _resolve_owner(owner):
    if owner is None or owner == '':
        return -1
    if isinstance(owner, int) or str(owner).isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise BackupError('owner %r does not exist on this host' % (owner,), param='owner')


def _resolve_group(group):
    if group is None or group == '':
        return -1
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise BackupError('group %r does not exist on this host' % (group,), param='group')


def parse_mode(mode):
    """``0600``, ``'0600'``, ``'600'`` or 0o600 -> 0o600; anything else names ``mode``."""
    if mode is None:
        return FILE_MODE
    if isinstance(mode, int) and not isinstance(mode, bool):
        value = mode
    elif isinstance(mode, str) and re.match(r'\A0?[0-7]{3,4}\Z', mode):
        value = int(mode, 8)
    else:
        raise BackupError('mode must be an octal string like "0600"; got %r' % (mode,),
                          param='mode')
    if value & ~0o7777 or value & 0o7000:
        raise BackupError('mode must be plain permission bits like "0600"; got %r' % (mode,),
                          param='mode')
    return value


def _metrics(kind, target, ok, started, size, metrics_dir):
    if metrics_dir:
        metrics.write_job_metrics(kind, target, ok, time.time() - started, size=size,
                                  textfile_dir=metrics_dir)


def backup(root, project, environment=DEFAULT_ENVIRONMENT, src=None, content=None, values=None,
           trigger=None, check_mode=False, lock_timeout=DEFAULT_WAIT,
           metrics_dir=metrics.DEFAULT_TEXTFILE_DIR):
    """Record a version from ``src`` (a file), ``content`` (text) or ``values`` (key edits
    of the current version). Writes metrics kind ``env`` unless in check mode."""
    started = time.time()
    store = EnvStore(root, project, environment)
    given = [name for name, value in (('src', src), ('content', content), ('values', values))
             if value is not None]
    if len(given) != 1:
        raise BackupError('give exactly one of src, content or values (got %s)'
                          % (', '.join(given) or 'none'), param='src')
    if trigger is None:
        trigger = 'set' if values is not None else 'manual'
    try:
        data = None
        source = 'content'
        if src is not None:
            source = src
            try:
                with open(src, 'rb') as handle:
                    data = handle.read()
            except OSError as exc:
                raise BackupError('cannot read src %s: %s' % (src, exc.strerror), param='src')
        elif content is not None:
            if not isinstance(content, str):
                raise BackupError('content must be text', param='content')
            data = content.encode(envfile.ENCODING, envfile.ERRORS)
        else:
            source = 'values'
        result = store.record(data=data, values=values, trigger=trigger, source=source,
                              check_mode=check_mode, lock_timeout=lock_timeout)
    except BackupError:
        if not check_mode:
            _metrics(METRICS_KIND, store.target, False, started, None, metrics_dir)
        raise
    result['duration_seconds'] = round(time.time() - started, 3)
    if not check_mode:
        _metrics(METRICS_KIND, store.target, True, started, result['size_bytes'], metrics_dir)
    return result


def restore(root, project, environment=DEFAULT_ENVIRONMENT, version='current', dest=None,
            owner=None, group=None, mode=None, check_mode=False, lock_timeout=DEFAULT_WAIT,
            metrics_dir=metrics.DEFAULT_TEXTFILE_DIR):
    """Write a version to ``dest`` atomically with ``mode``/owner/group; changed=False when
    ``dest`` already has exactly that content and metadata. Metrics kind ``env_restore``."""
    started = time.time()
    store = EnvStore(root, project, environment)
    if not isinstance(dest, str) or not os.path.isabs(dest):
        raise BackupError('dest must be the absolute path of the app\'s .env file; got %r'
                          % (dest,), param='dest')
    file_mode = parse_mode(mode)
    uid = _resolve_owner(owner)
    gid = _resolve_group(group)
    real = os.path.realpath(dest)
    if os.path.isdir(real):
        raise BackupError('dest %s is a directory; give the .env file path' % dest, param='dest')
    if not os.path.isdir(os.path.dirname(real)):
        raise BackupError('dest directory %s does not exist' % os.path.dirname(real),
                          param='dest')
    if not store.exists():
        raise BackupError('no env backups for %s under %s (version %r cannot be restored)'
                          % (store.target, store.root, version), param='project')
    try:
        if check_mode:
            result = _restore(store, version, real, dest, file_mode, uid, gid, True)
        else:
            with store._lock(lock_timeout):
                repaired = store.recover()
                result = _restore(store, version, real, dest, file_mode, uid, gid, False)
                result['repaired'] = repaired
    except BackupError:
        if not check_mode:
            _metrics(METRICS_KIND_RESTORE, store.target, False, started, None, metrics_dir)
        raise
    result['duration_seconds'] = round(time.time() - started, 3)
    if not check_mode:
        _metrics(METRICS_KIND_RESTORE, store.target, True, started, result['size_bytes'],
                 metrics_dir)
    return result


def _restore(store, version, real, dest, file_mode, uid, gid, check_mode):
    entries = store.entries()
    entry = store.resolve(version, entries)
    wanted = version[:-4] if version.endswith('.env') else version
    name = None
    if wanted == 'master' and os.path.exists(store.file(MASTER)):
        name = MASTER  # else a killed first run had not written it yet: same bytes as entry
    data = store.read_version(entry, name)
    try:
        with open(real, 'rb') as handle:
            old = handle.read()
        st = os.stat(real)
    except FileNotFoundError:
        old, st = None, None
    same = (st is not None and old == data and stat.S_IMODE(st.st_mode) == file_mode
            and (uid == -1 or st.st_uid == uid) and (gid == -1 or st.st_gid == gid))
    before = envfile.parse_bytes(old).to_dict() if old is not None else {}
    after = envfile.parse_bytes(data).to_dict()
    result = dict(project=store.project, environment=store.environment, dest=dest,
                  version=entry['version'], requested_version=version, file=entry['file'],
                  sha256=entry['sha256'], size_bytes=len(data), mode='%04o' % file_mode,
                  changed=not same, content_changed=old != data,
                  dest_sha256_before=_sha256(old) if old is not None else None,
                  diff=envfile.masked_diff(before, after, '%s (before)' % dest,
                                           '%s (%s)' % (dest, entry['version'])),
                  **envfile.key_changes(before, after))
    if same or check_mode:
        return result
    with durable.atomic_path(real, file_mode) as temp:
        with open(temp, 'wb') as handle:
            handle.write(data)
        if uid != -1 or gid != -1:
            os.chown(temp, uid, gid)
        elif st is not None:
            os.chown(temp, st.st_uid, st.st_gid)  # keep the app's ownership
    return result


def listing(root, project, environment=DEFAULT_ENVIRONMENT, verify=False):
    return EnvStore(root, project, environment).listing(verify=verify)


# ---- host CLI: codeb-backup env backup|set|restore|list ----

def _common(parser):
    parser.add_argument('--project', required=True, help='project name (e.g. worb)')
    parser.add_argument('--environment', default=DEFAULT_ENVIRONMENT,
                        help='environment name (default: %(default)s)')
    parser.add_argument('--root', default=DEFAULT_ROOT, help='store root (default: %(default)s)')


def _writing(parser):
    parser.add_argument('--metrics-dir', default=metrics.DEFAULT_TEXTFILE_DIR,
                        help='node_exporter textfile directory, "" to disable '
                             '(default: %(default)s)')
    parser.add_argument('--lock-timeout', type=float, default=DEFAULT_WAIT,
                        help='seconds to wait for another run of this project/environment')
    parser.add_argument('--check', action='store_true', help='only say what would change')


def _read_values_file(path):
    if path == '-':
        import sys
        text = sys.stdin.buffer.read()
    else:
        try:
            with open(path, 'rb') as handle:
                text = handle.read()
        except OSError as exc:
            raise BackupError('cannot read values file %s: %s' % (path, exc.strerror),
                              param='values_file')
    values = envfile.parse_bytes(text).to_dict()
    if not values:
        raise BackupError('values file %s holds no KEY=value lines' % path, param='values_file')
    return values


def _strip(result):
    result = dict(result)
    result.pop('diff', None)
    return result


def _cli_backup(args):
    content = None
    src = args.src
    if args.src == '-':
        import sys
        src = None
        content = sys.stdin.buffer.read().decode(envfile.ENCODING, envfile.ERRORS)
    return _strip(backup(args.root, args.project, args.environment, src=src, content=content,
                         trigger=args.trigger, check_mode=args.check,
                         lock_timeout=args.lock_timeout, metrics_dir=args.metrics_dir))


def _cli_set(args):
    result = _strip(backup(args.root, args.project, args.environment,
                           values=_read_values_file(args.values_file), trigger='set',
                           check_mode=args.check, lock_timeout=args.lock_timeout,
                           metrics_dir=args.metrics_dir))
    if args.dest and not args.check:
        result['restored'] = _strip(restore(
            args.root, args.project, args.environment, 'current', args.dest, args.owner,
            args.group, args.mode, lock_timeout=args.lock_timeout, metrics_dir=args.metrics_dir))
        result['changed'] = result['changed'] or result['restored']['changed']
    return result


def _cli_restore(args):
    return _strip(restore(args.root, args.project, args.environment, args.version, args.dest,
                          args.owner, args.group, args.mode, check_mode=args.check,
                          lock_timeout=args.lock_timeout, metrics_dir=args.metrics_dir))


def _cli_list(args):
    return listing(args.root, args.project, args.environment, verify=args.verify)


def _dest_options(parser, required):
    parser.add_argument('--dest', required=required, help="the app's .env file to write")
    parser.add_argument('--owner', help='owner of dest (default: keep)')
    parser.add_argument('--group', help='group of dest (default: keep)')
    parser.add_argument('--mode', default='0600', help='mode of dest (default: %(default)s)')


def register_cli(subparsers):
    env = subparsers.add_parser('env', help='versioned backups of app .env files',
                                description='Back up, edit, restore and list versions of an '
                                            'app .env file (master, current, history).')
    sub = env.add_subparsers(dest='env_command', metavar='ACTION')
    sub.required = True

    parser = sub.add_parser('backup', help='record the .env file as a version if it changed')
    _common(parser)
    parser.add_argument('--src', required=True, help='the .env file to back up ("-": stdin)')
    parser.add_argument('--trigger', choices=TRIGGERS, default='daily',
                        help='why this backup runs (default: %(default)s)')
    _writing(parser)
    parser.set_defaults(handler=_cli_backup)

    parser = sub.add_parser('set', help='set keys in the current version (values from a file, '
                                        'never the command line) and record a version')
    _common(parser)
    parser.add_argument('--values-file', required=True,
                        help='KEY=value lines to set ("-": stdin); secrets stay off the '
                             'command line')
    _dest_options(parser, required=False)
    _writing(parser)
    parser.set_defaults(handler=_cli_set)

    parser = sub.add_parser('restore', help='write a version to the app .env file atomically')
    _common(parser)
    parser.add_argument('--version', default='current',
                        help='master, current or a timestamp YYYY-MM-DDTHH:MM:SS '
                             '(default: %(default)s)')
    _dest_options(parser, required=True)
    _writing(parser)
    parser.set_defaults(handler=_cli_restore)

    parser = sub.add_parser('list', help='list versions (time, trigger, sha256, changed keys)')
    _common(parser)
    parser.add_argument('--verify', action='store_true',
                        help='fail if any file does not match its sha256')
    parser.set_defaults(handler=_cli_list)
