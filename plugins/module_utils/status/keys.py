# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status API's key store: SHA-256 digests of API keys in a 0600 JSON file.

A key is ``codeb_{team}_{role}_{token}`` with a ``secrets.token_urlsafe`` token; it is
printed once by ``add`` and never stored: the file holds only its sha256 hex digest, with
the team and role the key grants. Authentication hashes whatever the client sent and
compares that digest with every active record's in constant time, with no early exit and
no parsing of the key's text first, so a missing, malformed, unknown or revoked key (or
one with any part wrong) takes the same path; team and role come from the record only.

Writers (add, revoke) hold a lock and replace the file atomically; the API re-reads the
file when its identity, size or mtime changes, so a change takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading

from ansible_collections.codeb.backup.plugins.module_utils import durable
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock
from ansible_collections.codeb.backup.plugins.module_utils.naming import format_timestamp, validate_name
from ansible_collections.codeb.backup.plugins.module_utils.status.config import ROLES, validate_team

VERSION = 1
TOKEN_BYTES = 32
LOCK_WAIT = 30.0
_PUBLIC_FIELDS = ('id', 'team', 'role', 'name', 'created', 'revoked')


def digest(key):
    """The stored form of ``key`` (str or bytes): its sha256, lowercase hex."""
    if isinstance(key, str):
        key = key.encode('utf-8', 'surrogateescape')
    return hashlib.sha256(key).hexdigest()


def _now():
    return format_timestamp() + 'Z'


def _validate_role(role):
    if role not in ROLES:
        raise BackupError('role must be one of %s; got %r' % (', '.join(ROLES), role), param='role')
    return role


def _check_record(path, index, record):
    if not isinstance(record, dict) or not isinstance(record.get('sha256'), str) \
            or len(record['sha256']) != 64 or not isinstance(record.get('id'), str) \
            or record.get('role') not in ROLES or not isinstance(record.get('team'), str):
        raise BackupError('key store %s: entry %d is not a key record (id, team, role, sha256)'
                          % (path, index), param='keys_file')
    return record


class KeyStore(object):
    """The key file at ``path``; ``authenticate`` is thread-safe and re-reads on change."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self._signature = None
        self._active = ()

    # reading

    def _read(self):
        try:
            with open(self.path, 'rb') as handle:
                data = json.loads(handle.read().decode('utf-8'))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise BackupError('cannot read the key store %s: %s' % (self.path, exc.strerror),
                              param='keys_file')
        except ValueError as exc:
            raise BackupError('the key store %s is not valid JSON: %s' % (self.path, exc),
                              param='keys_file')
        if not isinstance(data, dict) or data.get('version') != VERSION \
                or not isinstance(data.get('keys'), list):
            raise BackupError('the key store %s is not a version %d key file' % (self.path, VERSION),
                              param='keys_file')
        return [_check_record(self.path, index, record) for index, record in enumerate(data['keys'])]

    def _file_signature(self):
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _active_records(self):
        """The active records, re-read when the file changed since the last read."""
        signature = self._file_signature()
        with self._lock:
            if signature != self._signature or signature is None:
                self._active = tuple(record for record in self._read() if not record.get('revoked'))
                self._signature = signature
            return self._active

    def authenticate(self, key):
        """The record ``key`` belongs to, or None: one hash, then a constant-time comparison
        with every active record (no early exit), whatever ``key`` is (None included)."""
        presented = digest(key if key is not None else b'')
        match = None
        for record in self._active_records():
            if hmac.compare_digest(presented, record['sha256']) and match is None:
                match = record
        return match

    def list(self):
        """Every record without its digest, oldest first."""
        return [dict((field, record.get(field)) for field in _PUBLIC_FIELDS)
                for record in self._read()]

    # writing

    def _write(self, records):
        data = json.dumps({'version': VERSION, 'keys': records}, indent=2, sort_keys=True) + '\n'
        try:
            owner = os.stat(self.path)
        except FileNotFoundError:
            owner = None
        with durable.atomic_path(self.path, mode=0o600) as temp:
            with open(temp, 'w') as handle:
                handle.write(data)
            if owner is not None:
                # the replacement keeps the owner the role gave the file (the service's user)
                os.chown(temp, owner.st_uid, owner.st_gid)

    def _locked(self):
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise BackupError('the key store directory %s does not exist' % directory,
                              param='keys_file')
        return job_lock(self.path + '.lock', 'change of the key store %s' % self.path, LOCK_WAIT)

    def add(self, team, role, name=None):
        """Create a key for ``team`` with ``role``; the result holds the key, the only time
        it is ever shown."""
        validate_team('team', team)
        _validate_role(role)
        if name is not None:
            validate_name('name', name)
        with self._locked():
            records = self._read()
            key_id = secrets.token_hex(8)
            key = 'codeb_%s_%s_%s' % (team, role, secrets.token_urlsafe(TOKEN_BYTES))
            record = {'id': key_id, 'team': team, 'role': role, 'name': name,
                      'sha256': digest(key), 'created': _now(), 'revoked': None}
            self._write(records + [record])
        return {'id': key_id, 'team': team, 'role': role, 'name': name,
                'created': record['created'], 'key': key}

    def revoke(self, key_id):
        """Mark the key ``key_id`` revoked; revoking a revoked key changes nothing."""
        if not isinstance(key_id, str) or not key_id:
            raise BackupError('id must name a key (see api-key list)', param='id')
        with self._locked():
            records = self._read()
            found = [record for record in records if record['id'] == key_id]
            if not found:
                raise BackupError('no key with id %r in %s (see api-key list)' % (key_id, self.path),
                                  param='id')
            record = found[0]
            changed = not record.get('revoked')
            if changed:
                record['revoked'] = _now()
                self._write(records)
        return {'changed': changed, 'id': key_id, 'team': record['team'], 'role': record['role'],
                'name': record.get('name'), 'revoked': record['revoked']}
