"""Manifests: updated atomically, refused when tampered with."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import durable
from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError, BackupError
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest, check_artifact


def test_manifest_update_and_reload(tmp_path):
    manifest = Manifest(str(tmp_path))
    assert manifest.entries() == []
    with manifest.update() as entries:
        entries['b.dump'] = {'file': 'b.dump', 'time': '2026-01-02T00:00:00'}
        entries['a.dump'] = {'file': 'a.dump', 'time': '2026-01-01T00:00:00'}
    assert [e['file'] for e in Manifest(str(tmp_path)).entries()] == ['a.dump', 'b.dump']
    (tmp_path / 'manifest.json').write_text('{broken')
    with pytest.raises(BackupError):
        manifest.load()


def test_manifest_refuses_traversal_entries(tmp_path):
    (tmp_path / 'manifest.json').write_text(json.dumps({'format': 1, 'entries': {
        '../canary': {'file': '../canary', 'time': '2026-01-01T00:00:00'}}}))
    with pytest.raises(BackupError) as caught:
        Manifest(str(tmp_path)).load()
    assert caught.value.param == 'manifest' and 'tampered' in caught.value.msg


def test_manifest_update_removes_a_killed_writes_temporary(tmp_path):
    stale = tmp_path / '.tmp-manifest.json.abc123'
    stale.write_text('{')
    with Manifest(str(tmp_path)).update() as entries:
        entries['a.dump'] = {'file': 'a.dump', 'time': '2026-01-01T00:00:00'}
    assert not stale.exists()


def _artifact(tmp_path, data=b'snapshot bytes'):
    path = tmp_path / 'a.dump'
    path.write_bytes(data)
    return str(path), dict(file='a.dump', sha256=durable.sha256_bytes(data), size_bytes=len(data))


def test_check_artifact_returns_the_sha256_of_an_intact_artifact(tmp_path):
    path, entry = _artifact(tmp_path)
    assert check_artifact(path, entry) == entry['sha256']


@pytest.mark.parametrize('damage, message', [
    ('missing', 'is missing although the manifest lists it'),
    ('symlink', 'is a symlink'),
    ('size', 'the manifest says 14'),
    ('flip', 'sha256 mismatch'),
])
def test_check_artifact_names_the_evidence(tmp_path, damage, message):
    path, entry = _artifact(tmp_path)
    if damage == 'missing':
        os.unlink(path)
    elif damage == 'symlink':
        os.rename(path, path + '.real')
        os.symlink(path + '.real', path)
    elif damage == 'size':
        with open(path, 'ab') as handle:
            handle.write(b'x')
    else:
        with open(path, 'r+b') as handle:
            handle.write(b'S')
    with pytest.raises(ArtifactError, match=message) as raised:
        check_artifact(path, entry, param='snapshot')
    assert raised.value.param == 'snapshot'


def test_check_artifact_lets_an_unreadable_disk_through_as_no_evidence(tmp_path):
    path, entry = _artifact(tmp_path)

    def unreadable(_path):
        raise PermissionError(13, 'Permission denied', _path)
    with pytest.raises(PermissionError):
        check_artifact(path, entry, digest=unreadable)
