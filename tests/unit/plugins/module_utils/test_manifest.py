"""Manifests: updated atomically, refused when tampered with."""

from __future__ import annotations

import json

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest


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
