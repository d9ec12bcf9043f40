# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The env store's entry points: backup, set, restore and listing.

The Ansible modules and the host command call these, and only these; each one that
writes runs as one :class:`Job` (lock-free outcome metrics, one result) and takes the
store's lock through ``EnvStore.writing``. ``_Dest`` is the app's live ``.env`` file:
validated, compared and written atomically with its mode and ownership.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat

from ansible_collections.codeb.backup.plugins.module_utils import durable, metrics
from ansible_collections.codeb.backup.plugins.module_utils.env import envfile
from ansible_collections.codeb.backup.plugins.module_utils.env.store import (
    CURRENT, DEFAULT_ENVIRONMENT, FILE_MODE, LOG, MASTER, METRICS_KIND, METRICS_KIND_RESTORE,
    EnvStore)
from ansible_collections.codeb.backup.plugins.module_utils.errors import (ArtifactError, BackupError,
                                                                          as_backup_error)
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.locking import DEFAULT_WAIT


def _resolve_id(param, value):
    """The uid (``param='owner'``) or gid (``'group'``) of a name or number; -1 (keep)
    when not given."""
    if value is None or value == '':
        return -1
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    try:
        if param == 'owner':
            return pwd.getpwnam(value).pw_uid
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise BackupError('%s %r does not exist on this host' % (param, value), param=param)


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
        self.uid = _resolve_id('owner', owner)
        self.gid = _resolve_id('group', group)
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
                    content_changed=old != data, size_bytes=len(data), sha256=durable.sha256_bytes(data),
                    dest_sha256_before=durable.sha256_bytes(old) if old is not None else None)

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
    """``codeb-backup env set``: under the store's lock, save the live ``dest`` first
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
        return _listing(store, verify)
    except Exception as exc:  # an unreadable store fails clearly; it is not "damaged"
        raise as_backup_error(exc, 'listing the env store %s' % store.path)


def _listing(store, verify):
    """Versions with time, trigger, sha256 and changed key names, plus the store's files
    with their actual sha256 (what a replica is compared with). Only evidence (a
    missing file, a different sha256) is reported as a problem; a file that cannot be
    read fails the listing instead."""
    entries = store.entries() if store.exists() else []
    files = []
    problems = []
    if entries:
        expected = [(e['file'], e['sha256']) for e in entries]
        expected.append((MASTER, entries[0]['sha256']))
        expected.append((CURRENT, entries[-1]['sha256']))
        for name, sha in expected:
            path = store.file(name)
            try:
                actual = durable.sha256_file(path)
                size = os.path.getsize(path)
            except FileNotFoundError:
                problems.append('%s is missing' % name)
                continue
            if actual != sha:
                problems.append('%s: sha256 %s, expected %s' % (name, actual, sha))
            files.append(dict(name=name, sha256=actual, size_bytes=size))
        files.append(dict(name=LOG, sha256=durable.sha256_file(store.log_path),
                          size_bytes=os.path.getsize(store.log_path)))
    if verify and problems:
        raise ArtifactError('env store %s failed verification: %s'
                            % (store.path, '; '.join(problems)), problems=problems)
    result = dict(
        project=store.project, environment=store.environment, store_path=store.path,
        exists=store.exists(), versions=entries, count=len(entries),
        current=entries[-1]['version'] if entries else None,
        master=entries[0]['version'] if entries else None,
        files=files, problems=problems, verified=bool(verify),
    )
    if not result['exists']:
        project_dir = os.path.join(store.root, store.project)
        result['available_environments'] = (sorted(os.listdir(project_dir))
                                            if os.path.isdir(project_dir) else [])
    return result
