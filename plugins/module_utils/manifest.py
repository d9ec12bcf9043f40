# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The manifest of a backup directory: one ``manifest.json`` listing every whole artifact.

An entry is added only after its artifact was committed under its final name, and
removed before the artifact is deleted, so the manifest never names a file that is not
whole. Entries are plain dicts keyed by file name; each subsystem adds its own fields to
the common ones: ``file``, ``time`` (UTC ``YYYY-MM-DDTHH:MM:SS``), ``sha256``,
``size_bytes``, ``duration_seconds``, ``status`` (``ok`` or ``failed_verification``).
"""

from __future__ import annotations

import contextlib
import json
import os

from ansible_collections.codeb.backup.plugins.module_utils import durable, naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError, BackupError
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock

MANIFEST_NAME = 'manifest.json'
FORMAT_VERSION = 1


class Manifest(object):
    def __init__(self, directory, name=MANIFEST_NAME):
        self.directory = directory
        self.path = os.path.join(directory, name)
        self.lock_path = os.path.join(directory, '.%s.lock' % name)

    def load(self):
        """The entries as ``{file: entry}``; an absent manifest is empty."""
        try:
            with open(self.path, 'rb') as handle:
                data = json.loads(handle.read().decode('utf-8'))
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise BackupError('manifest %s is not valid JSON (%s); it was not changed. '
                              'Inspect or move it aside.' % (self.path, exc))
        if not isinstance(data, dict) or not isinstance(data.get('entries'), dict):
            raise BackupError('manifest %s has an unknown layout; it was not changed.' % self.path)
        for key, entry in data['entries'].items():
            self._check_entry(key, entry)
        return data['entries']

    def _check_entry(self, key, entry):
        """A manifest is input: an entry whose name could leave the directory is refused
        before anything opens, renames or deletes it."""
        try:
            naming.validate_file_name('file', key)
            if not isinstance(entry, dict) or entry.get('file') != key:
                raise BackupError('entry %r does not name itself' % (key,), param='file')
            if not isinstance(entry.get('time'), str):
                raise BackupError('entry %r has no time' % (key,), param='file')
        except BackupError as exc:
            raise BackupError('manifest %s holds an entry that is not a plain file of %s (%s); '
                              'nothing was changed. Inspect the manifest: it may have been '
                              'tampered with.' % (self.path, self.directory, exc.msg),
                              param='manifest')

    def remove_stale_temps(self):
        """Remove temporaries of a manifest write a killed run left (``update`` calls it
        while it holds the manifest's lock)."""
        return durable.remove_stale_temps(self.directory,
                                          durable.temps_of(os.path.basename(self.path)))

    def entries(self):
        """Entries sorted oldest first (by ``time``, then file name)."""
        return sorted(self.load().values(), key=lambda e: (e.get('time', ''), e.get('file', '')))

    @contextlib.contextmanager
    def update(self, wait=30.0):
        """Lock, load, let the caller change the ``{file: entry}`` dict, write it back
        atomically if it changed."""
        with job_lock(self.lock_path, 'manifest update in %s' % self.directory, wait=wait):
            self.remove_stale_temps()
            entries = self.load()
            before = json.dumps(entries, sort_keys=True)
            yield entries
            if json.dumps(entries, sort_keys=True) != before:
                durable.atomic_write_json(self.path, {'format': FORMAT_VERSION, 'entries': entries})


def check_artifact(path, entry, digest=None, param=None):
    """Return the sha256 of the artifact at ``path`` when it is what its manifest ``entry``
    recorded (``sha256``, and ``size_bytes`` for a file); otherwise raise ArtifactError
    saying what is wrong. The first check of every verification and restore. An unreadable
    disk raises OSError instead: that is no evidence about the artifact."""
    if not os.path.lexists(path):
        raise ArtifactError('%s is missing although the manifest lists it' % path, param=param)
    if os.path.islink(path):
        raise ArtifactError('%s is a symlink, not the artifact the manifest lists' % path,
                            param=param)
    if os.path.isfile(path) and entry.get('size_bytes') is not None:
        size = os.path.getsize(path)
        if size != entry['size_bytes']:
            raise ArtifactError('%s is %d bytes, the manifest says %d'
                                % (path, size, entry['size_bytes']), param=param)
    actual = (digest or durable.sha256_file)(path)
    if actual != entry.get('sha256'):
        raise ArtifactError('%s fails its checksum: sha256 mismatch (manifest %s, file %s)'
                            % (path, entry.get('sha256'), actual), param=param)
    return actual
