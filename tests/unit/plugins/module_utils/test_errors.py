"""Errors: only an ArtifactError is evidence against an artifact."""

from __future__ import annotations

from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError, BackupError, as_backup_error


def test_artifact_error_is_a_backup_error():
    assert isinstance(ArtifactError('bad sha'), BackupError)
    assert as_backup_error(ArtifactError('bad sha'), 'x').msg == 'bad sha'
