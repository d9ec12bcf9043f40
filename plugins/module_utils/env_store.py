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
current.env. A run killed at any point leaves every file whole (atomic renames). Every
writing run (backup, set, restore) first repairs under the lock (``EnvStore.recover``):
it removes every temporary, adopts a whole version file a stopped run had not logged yet,
and rewrites a stale current.env or a missing master.env from the log. Names read from
the log are validated as plain version file names before anything opens them.

Set and restore save the app's live file first when its content is in no version yet,
so a hand edit is never lost. Only evidence (a missing file, a sha256 mismatch:
``ArtifactError``) calls a version damaged; a host problem (full or read-only disk,
permissions) fails the run, changes nothing recorded, and is reported through ``Job``.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import grp
import hashlib
import json
import os
import pwd
import re
import stat

from ansible_collections.codeb.backup.plugins.module_utils import durable, envfile, metrics, naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import (ArtifactError, BackupError,
                                                                          as_backup_error)
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
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
_VERSION_FILE_RE = re.compile(r'\A(%s)\.env\Z' % naming.TIMESTAMP_PATTERN)
_AVAILABLE_SHOWN = 30
_SHA256_RE = re.compile(r'\A[0-9a-f]{64}\Z')
_KEY_LISTS = ('keys_added', 'keys_removed', 'keys_changed')


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
        """The path of ``name`` in the store. Every name read from the log passes
        ``naming.validate_file_name`` here too, so nothing can reach outside the store."""
        if name not in (MASTER, CURRENT, LOG, LOCK):
            naming.validate_file_name('file', name)
        return os.path.join(self.path, name)

    # ---- reading (no lock needed: every file is replaced atomically) ----

    def exists(self):
        return os.path.isdir(self.path)

    def entries(self):
        """Committed versions, oldest first (log order), each checked (names, types, order)
        before anything uses it. Missing log: none."""
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
        previous = None
        for index, entry in enumerate(data['versions']):
            self._check_entry(index, entry, previous)
            previous = entry['version']
        return data['versions']

    def _check_entry(self, index, entry, previous):
        def refuse(problem):
            raise BackupError('%s, version entry %d: %s. Refusing to open, rename or delete '
                              'anything it names; nothing was changed. Inspect the log or move '
                              'the store aside.' % (self.log_path, index + 1, problem),
                              log=self.log_path, entry=index + 1)

        if not isinstance(entry, dict):
            refuse('is not an object')
        name = entry.get('file')
        try:
            naming.validate_file_name('file', name)
        except BackupError as exc:
            refuse(exc.msg)
        if not _VERSION_FILE_RE.match(name):
            refuse('file %r is not a version file name (YYYY-MM-DDTHH:MM:SS.env)' % (name,))
        if entry.get('version') != name[:-4]:
            refuse('version %r does not match file %r' % (_short(entry.get('version')), name))
        try:
            naming.parse_timestamp('version', entry['version'])
        except BackupError as exc:
            refuse(exc.msg)
        if previous is not None and entry['version'] <= previous:
            refuse('version %s is not after the previous one (%s)' % (entry['version'], previous))
        if not isinstance(entry.get('sha256'), str) or not _SHA256_RE.match(entry['sha256']):
            refuse('sha256 must be 64 hex digits; got %r' % (_short(entry.get('sha256')),))
        size = entry.get('size_bytes')
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            refuse('size_bytes must be a non-negative integer; got %r' % (_short(size),))
        for key in ('trigger', 'time', 'source'):
            if key in entry and not isinstance(entry[key], str):
                refuse('%s must be text; got %s' % (key, type(entry[key]).__name__))
        for key in _KEY_LISTS:
            if key in entry and (not isinstance(entry[key], list)
                                 or not all(isinstance(k, str) for k in entry[key])):
                refuse('%s must be a list of key names' % key)

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
        """The bytes of a committed version, verified against its logged sha256.

        A missing file or a sha256 mismatch is evidence about the version
        (``ArtifactError``); any other read failure (permissions, I/O) is a problem of the
        host and says so, without calling the version damaged."""
        path = self.file(name or entry['file'])
        try:
            with open(path, 'rb') as handle:
                data = handle.read()
        except FileNotFoundError:
            raise ArtifactError('%s is listed in %s but missing; the store is damaged'
                                % (path, LOG), file=os.path.basename(path))
        except OSError as exc:
            raise as_backup_error(exc, 'reading version %s of %s (the version itself is not '
                                       'known to be damaged)' % (entry['version'], self.target))
        if _sha256(data) != entry['sha256']:
            raise ArtifactError('%s does not match its sha256 in %s (expected %s, found %s); '
                                'refusing to use it' % (path, LOG, entry['sha256'], _sha256(data)),
                                file=os.path.basename(path))
        return data

    def listing(self, verify=False):
        """Versions with time, trigger, sha256 and changed key names, plus the store's files
        with their actual sha256 (what a replica is compared with). Only evidence (a
        missing file, a different sha256) is reported as a problem; a file that cannot be
        read fails the listing instead."""
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
            raise ArtifactError('env store %s failed verification: %s'
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

    @contextlib.contextmanager
    def writing(self, lock_timeout, dest=None):
        """The lock, then the repair of what a stopped run left; yields what was repaired.
        Every entry point that writes (backup, set, restore) goes through here."""
        self._ensure_dirs()
        with self._lock(lock_timeout):
            repaired = self.recover()
            if dest is not None:
                repaired += ['removed temporary %s beside %s' % (name, dest) for name in
                             durable.remove_stale_temps(
                                 os.path.dirname(dest), durable.temps_of(os.path.basename(dest)))]
            yield repaired

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
        """Repair what a killed or failed run left. Call only under the lock (``writing``).

        Removes every temporary (``.tmp-*``); adopts a whole version file the log does not
        list (a run stopped between renaming it into place and committing the log; the
        rename came after its fsync, so it is whole) or removes it when it cannot be such
        a file; rewrites a missing ``master.env`` or a stale ``current.env`` from the log.
        Only evidence removes a file: a file that cannot be read fails the run and stays.
        Returns what was done."""
        entries = self.entries()
        if not entries:
            for name in (MASTER, CURRENT):
                if os.path.lexists(self.file(name)):
                    raise BackupError('%s has %s but no %s: it was not written by codeb.backup '
                                      'or is damaged; nothing was changed. Move it aside.'
                                      % (self.path, name, LOG))
        done = ['removed temporary %s' % name for name in durable.remove_stale_temps(self.path)]
        committed = set(e['file'] for e in entries)
        for name in sorted(os.listdir(self.path)):
            if not _VERSION_FILE_RE.match(name) or name in committed:
                continue
            try:
                data = self._unlisted(name, entries)
            except ArtifactError as exc:
                os.unlink(self.file(name))
                durable.fsync_dir(self.path)
                done.append('removed unlisted version file %s (%s)' % (name, exc.msg))
                continue
            entry = self._entry(name[:-4], data, 'manual', 'recovered', entries,
                                self._changes_from(entries, data), recovered=True)
            entries = entries + [entry]
            self._write_log(entries)
            done.append('adopted %s: a whole version a stopped run had not logged yet' % name)
        if not entries:
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

    def _unlisted(self, name, entries):
        """The bytes of a version file the log does not list, if it can be one a stopped run
        of this store wrote; ``ArtifactError`` (the evidence) if not."""
        path = self.file(name)
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError('not a regular file')
        try:
            naming.parse_timestamp('file', name[:-4])
        except BackupError as exc:
            raise ArtifactError(exc.msg)
        if entries and name[:-4] <= entries[-1]['version']:
            raise ArtifactError('not after the last logged version %s, so no stopped run of '
                                'this store wrote it' % entries[-1]['version'])
        with open(path, 'rb') as handle:
            return handle.read()

    def _new_stamp(self, entries):
        """A UTC timestamp after the last version's (a clock step back never reorders
        history) and not taken by any version."""
        moment = naming.utcnow()
        if entries:
            last = naming.parse_timestamp('time', entries[-1]['version'])
            if moment.replace(microsecond=0) <= last:
                moment = last + datetime.timedelta(seconds=1)
        return naming.unique_timestamp(set(e['version'] for e in entries), moment)

    def _changes_from(self, entries, data):
        """Key names added, removed and changed against the current version."""
        before = {}
        if entries:
            try:
                before = envfile.parse_bytes(self.read_version(entries[-1])).to_dict()
            except ArtifactError:
                before = {}  # compared with nothing; the damage is reported where it matters
        return envfile.key_changes(before, envfile.parse_bytes(data).to_dict())

    def _entry(self, stamp, data, trigger, source, entries, changes, **extra):
        entry = dict(version=stamp, file=stamp + '.env', time=stamp, trigger=trigger,
                     sha256=_sha256(data), size_bytes=len(data), master=not entries,
                     source=source, keys=len(envfile.parse_bytes(data).to_dict()), **changes)
        entry.update(extra)
        return entry

    def _write_log(self, entries):
        durable.atomic_write_json(self.log_path, dict(format=LOG_FORMAT, project=self.project,
                                                      environment=self.environment,
                                                      versions=entries), FILE_MODE)

    def _commit(self, data, trigger, entries, changes, source):
        """Write one version: (1) its file, (2) the log (the commit point), (3) master.env
        on the first version, (4) current.env. Returns the new entry."""
        stamp = self._new_stamp(entries)
        entry = self._entry(stamp, data, trigger, source, entries, changes)
        final = self.file(entry['file'])
        with durable.atomic_path(final, FILE_MODE) as temp:
            with open(temp, 'wb') as handle:
                handle.write(data)
        try:
            self._write_log(entries + [entry])
        except BaseException:
            # not committed: do not leave a version file the log does not list
            with contextlib.suppress(OSError):
                os.unlink(final)
                durable.fsync_dir(self.path)
            raise
        for name in ((MASTER,) if not entries else ()) + (CURRENT,):
            try:
                durable.atomic_write_bytes(self.file(name), data, FILE_MODE)
            except OSError as exc:
                code = errno.errorcode.get(exc.errno, exc.errno)
                raise BackupError('version %s of %s is committed (%s), but writing %s failed: '
                                  '%s [%s]. The next writing run rewrites it from the log.'
                                  % (stamp, self.target, LOG, name, exc.strerror or exc, code),
                                  errno=exc.errno, version=stamp) from exc
        return entry

    def save_live(self, entries, live, trigger, source, check_mode):
        """Record the app's live file first, when its content is in no version yet (someone
        edited it by hand since the last backup), so overwriting it loses nothing.
        Returns ``(entries, saved, version)``."""
        if live is None:
            return entries, False, None
        sha = _sha256(live)
        for entry in entries:
            if entry['sha256'] == sha:
                return entries, False, None
        if check_mode:
            return entries, True, None
        entry = self._commit(live, trigger, entries, self._changes_from(entries, live), source)
        return entries + [entry], True, entry['version']

    def prepare(self, entries, data=None, values=None, trigger='manual', repaired=(), base=None,
                first=None):
        """What recording ``data``, or ``values`` applied to ``base`` (default: the current
        version), would do. Returns ``(result, data, changes)``; writes nothing."""
        if base is None and entries:
            base = self.read_version(entries[-1])
        first = not entries if first is None else first
        before_bytes = base if base is not None else b''
        before = envfile.parse_bytes(before_bytes).to_dict() if base is not None else {}
        if values is not None:
            edited = envfile.parse_bytes(before_bytes)
            edited.apply(values)
            data = edited.to_bytes()
        parsed = envfile.parse_bytes(data)
        after = parsed.to_dict()
        changes = envfile.key_changes(before, after)
        sha = _sha256(data)
        created = base is None or sha != _sha256(base)
        result = dict(project=self.project, environment=self.environment, store_path=self.path,
                      trigger=trigger, sha256=sha, size_bytes=len(data), repaired=list(repaired),
                      invalid_lines=parsed.invalid_lines(), created=created,
                      master_created=created and first, changed=created or bool(repaired),
                      diff=envfile.masked_diff(before, after,
                                               '%s (current)' % self.target,
                                               '%s (new version)' % self.target), **changes)
        if not created:
            result.update(version=entries[-1]['version'] if entries else None,
                          file=entries[-1]['file'] if entries else None)
        else:
            result.update(version=None, file=None)
        return result, data, changes

    def apply(self, entries, result, data, changes, trigger, source):
        """Commit what ``prepare`` planned; returns the entries after it."""
        if not result['created']:
            return entries
        entry = self._commit(data, trigger, entries, changes, source)
        result.update(version=entry['version'], file=entry['file'])
        return entries + [entry]

    def record(self, data=None, values=None, trigger='manual', source=None, check_mode=False,
               lock_timeout=DEFAULT_WAIT):
        """Record ``data`` (bytes) as a new version, or apply ``values`` to the current
        version; nothing happens when the result equals the current version."""
        _check_trigger(trigger)
        # a dry run first: bad input fails here, before anything is created
        prediction = self.prepare(self.entries() if self.exists() else [], data, values,
                                  trigger)[0]
        if check_mode:
            return prediction
        with self.writing(lock_timeout) as repaired:
            entries = self.entries()
            result, data, changes = self.prepare(entries, data, values, trigger, repaired)
            self.apply(entries, result, data, changes, trigger, source)
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


def _check_trigger(trigger):
    if trigger not in TRIGGERS:
        raise BackupError('trigger must be one of %s; got %r' % (', '.join(TRIGGERS), trigger),
                          param='trigger')


def _short(value):
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + '...'


def backup(root, project, environment=DEFAULT_ENVIRONMENT, src=None, content=None, values=None,
           trigger=None, check_mode=False, lock_timeout=DEFAULT_WAIT,
           metrics_dir=metrics.DEFAULT_TEXTFILE_DIR):
    """Record a version from ``src`` (a file), ``content`` (text) or ``values`` (key edits
    of the current version). Writes metrics kind ``env`` unless in check mode."""
    store = EnvStore(root, project, environment)
    with Job(METRICS_KIND, store.target, metrics_dir, check_mode=check_mode,
             what='env backup of %s' % store.target) as job:
        given = [name for name, value in (('src', src), ('content', content), ('values', values))
                 if value is not None]
        if len(given) != 1:
            raise BackupError('give exactly one of src, content or values (got %s)'
                              % (', '.join(given) or 'none'), param='src')
        if trigger is None:
            trigger = 'set' if values is not None else 'manual'
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
        job.size = result['size_bytes']
    result['duration_seconds'] = job.duration()
    return result


class _Dest(object):
    """The app's .env file as given: validated, its real path (a symlink is followed) and
    the wanted mode and ownership."""

    def __init__(self, dest, owner=None, group=None, mode=None):
        if not isinstance(dest, str) or not os.path.isabs(dest):
            raise BackupError('dest must be the absolute path of the app\'s .env file; got %r'
                              % (dest,), param='dest')
        self.dest = dest
        self.mode = parse_mode(mode)
        self.uid = _resolve_owner(owner)
        self.gid = _resolve_group(group)
        self.real = os.path.realpath(dest)
        if os.path.isdir(self.real):
            raise BackupError('dest %s is a directory; give the .env file path' % dest,
                              param='dest')
        if not os.path.isdir(os.path.dirname(self.real)):
            raise BackupError('dest directory %s does not exist' % os.path.dirname(self.real),
                              param='dest')

    def read(self):
        """``(bytes, stat)`` of the live file, ``(None, None)`` when there is none."""
        try:
            with open(self.real, 'rb') as handle:
                data = handle.read()
            return data, os.stat(self.real)
        except FileNotFoundError:
            return None, None

    def plan(self, data, old, st):
        """The part of a result that says what writing ``data`` would change."""
        same = (st is not None and old == data and stat.S_IMODE(st.st_mode) == self.mode
                and (self.uid == -1 or st.st_uid == self.uid)
                and (self.gid == -1 or st.st_gid == self.gid))
        return dict(dest=self.dest, mode='%04o' % self.mode, changed=not same,
                    content_changed=old != data, size_bytes=len(data), sha256=_sha256(data),
                    dest_sha256_before=_sha256(old) if old is not None else None)

    def write(self, data, st):
        """Temp name beside the file, fsync, mode and owner, rename, directory fsync."""
        with durable.atomic_path(self.real, self.mode) as temp:
            with open(temp, 'wb') as handle:
                handle.write(data)
            if self.uid != -1 or self.gid != -1:
                os.chown(temp, self.uid, self.gid)
            elif st is not None:
                os.chown(temp, st.st_uid, st.st_gid)  # keep the app's ownership


def set_values(root, project, environment=DEFAULT_ENVIRONMENT, values=None, dest=None,
               owner=None, group=None, mode=None, check_mode=False, lock_timeout=DEFAULT_WAIT,
               metrics_dir=metrics.DEFAULT_TEXTFILE_DIR):
    """The seed's ``we env set``: under the store's lock, save the live ``dest`` first
    (when its content is in no version yet), apply ``values`` to what the app runs, record
    the result as a version and write it to ``dest`` atomically. Without ``dest`` the
    values edit the current version. Metrics kind ``env``."""
    store = EnvStore(root, project, environment)
    with Job(METRICS_KIND, store.target, metrics_dir, check_mode=check_mode,
             what='env set of %s' % store.target) as job:
        if not isinstance(values, dict) or not values:
            raise BackupError('values must be a mapping of keys to set (null removes one)',
                              param='values')
        target = _Dest(dest, owner, group, mode) if dest is not None else None
        # a dry run first: bad input fails here, before anything is created
        result = _set(store, values, target, True, [])
        if not check_mode:
            with store.writing(lock_timeout, target.real if target else None) as repaired:
                result = _set(store, values, target, False, repaired)
        job.size = result['size_bytes']
    result['duration_seconds'] = job.duration()
    return result


def _set(store, values, target, check_mode, repaired):
    entries = store.entries() if store.exists() else []
    live, st = target.read() if target else (None, None)
    entries, saved, saved_version = store.save_live(entries, live, 'set', target and target.dest,
                                                    check_mode)
    base = live if live is not None else None
    result, data, changes = store.prepare(entries, values=values, trigger='set',
                                          repaired=repaired, base=base,
                                          first=not entries and not saved)
    if not check_mode:
        store.apply(entries, result, data, changes, 'set', 'values')
    result.update(live_saved=saved, live_version=saved_version)
    result['changed'] = result['changed'] or saved
    if target:
        restored = target.plan(data, live, st)
        restored['version'] = result['version']
        if restored['changed'] and not check_mode:
            target.write(data, st)
        result['restored'] = restored
        result['changed'] = result['changed'] or restored['changed']
    return result


def restore(root, project, environment=DEFAULT_ENVIRONMENT, version='current', dest=None,
            owner=None, group=None, mode=None, check_mode=False, lock_timeout=DEFAULT_WAIT,
            metrics_dir=metrics.DEFAULT_TEXTFILE_DIR):
    """Write a version to ``dest`` atomically with ``mode``/owner/group, after saving the
    live ``dest`` as a version when its content is in no version yet (so a hand edit is
    never lost); changed=False when ``dest`` already has exactly that content and
    metadata. Metrics kind ``env_restore``."""
    store = EnvStore(root, project, environment)
    with Job(METRICS_KIND_RESTORE, store.target, metrics_dir, check_mode=check_mode,
             what='env restore of %s' % store.target) as job:
        target = _Dest(dest, owner, group, mode)
        if not store.exists():
            raise BackupError('no env backups for %s under %s (version %r cannot be restored)'
                              % (store.target, store.root, version), param='project')
        if check_mode:
            result = _restore(store, version, target, True, [])
        else:
            with store.writing(lock_timeout, target.real) as repaired:
                result = _restore(store, version, target, False, repaired)
        job.size = result['size_bytes']
    result['duration_seconds'] = job.duration()
    return result


def _restore(store, version, target, check_mode, repaired):
    entries = store.entries()
    entry = store.resolve(version, entries)  # before the live file is saved: "current" is
    wanted = version[:-4] if version.endswith('.env') else version  # the last backup's
    name = None
    if wanted == 'master' and os.path.exists(store.file(MASTER)):
        name = MASTER  # else a killed first run had not written it yet: same bytes as entry
    data = store.read_version(entry, name)
    old, st = target.read()
    entries, saved, saved_version = store.save_live(entries, old, 'manual', target.dest,
                                                    check_mode)
    before = envfile.parse_bytes(old).to_dict() if old is not None else {}
    after = envfile.parse_bytes(data).to_dict()
    result = target.plan(data, old, st)
    result.update(project=store.project, environment=store.environment,
                  version=entry['version'], requested_version=version, file=entry['file'],
                  sha256=entry['sha256'], repaired=repaired, live_saved=saved,
                  live_version=saved_version,
                  diff=envfile.masked_diff(before, after, '%s (before)' % target.dest,
                                           '%s (%s)' % (target.dest, entry['version'])),
                  **envfile.key_changes(before, after))
    if result['changed'] and not check_mode:
        target.write(data, st)
    result['changed'] = result['changed'] or saved or bool(repaired)
    return result


def listing(root, project, environment=DEFAULT_ENVIRONMENT, verify=False):
    store = EnvStore(root, project, environment)
    try:
        return store.listing(verify=verify)
    except Exception as exc:  # an unreadable store fails clearly; it is not "damaged"
        raise as_backup_error(exc, 'listing the env store %s' % store.path)


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
    result = _strip(set_values(args.root, args.project, args.environment,
                               values=_read_values_file(args.values_file), dest=args.dest,
                               owner=args.owner, group=args.group, mode=args.mode,
                               check_mode=args.check, lock_timeout=args.lock_timeout,
                               metrics_dir=args.metrics_dir))
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
