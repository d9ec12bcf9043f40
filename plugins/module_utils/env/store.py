# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The versioned store of app ``.env`` files.

Layout (the ``env-backup`` directory the existing tooling reads)::

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
import json
import os
import stat

from ansible_collections.codeb.backup.plugins.module_utils import durable, naming
from ansible_collections.codeb.backup.plugins.module_utils.env import envfile
from ansible_collections.codeb.backup.plugins.module_utils.errors import (ArtifactError, BackupError,
                                                                          as_backup_error)
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
_VERSION_FILE_RE = naming.ENV_VERSION_FILE_RE
_AVAILABLE_SHOWN = 30
_SHA256_RE = naming.SHA256_RE
_KEY_LISTS = ('keys_added', 'keys_removed', 'keys_changed')


def _validate_root(root):
    if not isinstance(root, str) or not root or not os.path.isabs(root):
        raise BackupError('root must be an absolute path; got %r' % (root,), param='root')
    return os.path.normpath(root)


def _target(project, environment):
    return '%s/%s' % (project, environment)


def environments(root, project):
    """The environments the store holds for ``project``, sorted (read-only): its
    subdirectories that are valid environment names. No project directory: none."""
    project_dir = os.path.join(_validate_root(root), naming.validate_name('project', project))
    try:
        names = os.listdir(project_dir)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        path = os.path.join(project_dir, name)
        try:
            naming.validate_name('environment', name)
        except BackupError:
            continue  # not a store of this layout (a lock, a file put there by hand)
        if os.path.isdir(path) and not os.path.islink(path):
            found.append(name)
    return sorted(found)


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
        if durable.sha256_bytes(data) != entry['sha256']:
            raise ArtifactError('%s does not match its sha256 in %s (expected %s, found %s); '
                                'refusing to use it' % (path, LOG, entry['sha256'], durable.sha256_bytes(data)),
                                file=os.path.basename(path))
        return data

    # ---- writing (always under the lock) ----

    def _lock(self, wait):
        return job_lock(self.file(LOCK), 'env backup of %s' % self.target, wait=wait)

    @contextlib.contextmanager
    def writing(self, lock_timeout, dest=None):
        """The lock, then the repair of what a stopped run left; yields what was repaired.
        Every entry point that writes (backup, set, restore) goes through here."""
        fixed = self._ensure_dirs()
        with self._lock(lock_timeout):
            repaired = fixed + self.recover()
            if dest is not None:
                repaired += ['removed temporary %s beside %s' % (name, dest) for name in
                             durable.remove_stale_temps(
                                 os.path.dirname(dest), durable.temps_of(os.path.basename(dest)))]
            yield repaired

    def _ensure_dirs(self):
        """Create the store's directories, or give them back mode 0700; returns what it
        changed on an existing store (so ``changed`` says so) - creating a new store is
        reported by the version it is created for."""
        fixed = []
        for path in (self.root, os.path.join(self.root, self.project), self.path):
            if not durable.ensure_dir(path, DIR_MODE) \
                    and stat.S_IMODE(os.stat(path).st_mode) != DIR_MODE:
                os.chmod(path, DIR_MODE)
                fixed.append('set mode %04o on %s' % (DIR_MODE, path))
        return fixed

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
                     sha256=durable.sha256_bytes(data), size_bytes=len(data), master=not entries,
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
        sha = durable.sha256_bytes(live)
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
        sha = durable.sha256_bytes(data)
        created = base is None or sha != durable.sha256_bytes(base)
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


def _check_trigger(trigger):
    if trigger not in TRIGGERS:
        raise BackupError('trigger must be one of %s; got %r' % (', '.join(TRIGGERS), trigger),
                          param='trigger')


def _short(value):
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + '...'
