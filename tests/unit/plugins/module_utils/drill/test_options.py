"""Defaults of codeb-backup drill that must agree with the restore_drill role's."""

from __future__ import annotations

import os

import yaml

from ansible_collections.codeb.backup.plugins.module_utils.drill import options

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 5))


def test_default_scratch_path_is_the_roles_and_outside_the_backup_root():
    """The scratch cluster runs as postgres, which must reach its directory through every
    parent; the backup root /opt/codeb is 0700 on the storage host, so a default under it
    cannot work there. A drill run by hand gets the path cron's drill uses."""
    with open(os.path.join(ROOT, 'roles', 'restore_drill', 'defaults', 'main.yml')) as handle:
        role = yaml.safe_load(handle)
    assert options.DEFAULT_SCRATCH_PATH == role['restore_drill_scratch_path']
    assert not options.DEFAULT_SCRATCH_PATH.startswith('/opt/codeb/')
