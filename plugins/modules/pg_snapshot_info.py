#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pg_snapshot_info
short_description: List the PostgreSQL snapshots made by codeb.backup.pg_snapshot
version_added: "0.1.0"
description:
  - Lists the snapshots recorded in C({backup_dir}/manifest.json), newest first, with time,
    size, sha256 and verification state. Reads only; never connects to PostgreSQL.
  - To re-check the files themselves use M(codeb.backup.pg_snapshot) with O(codeb.backup.pg_snapshot#module:state=verified).
author:
  - codeb.backup maintainers (@codeb)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - codeb.backup.attributes.info_module
options:
  database:
    description: Only list snapshots of this database. All databases when omitted.
    type: str
    aliases: [db, name]
  backup_dir:
    description: Directory holding the snapshots and C(manifest.json).
    type: path
    default: /opt/codeb/db-backup/postgresql
seealso:
  - module: codeb.backup.pg_snapshot
'''

EXAMPLES = r'''
- name: List the snapshots of worb
  codeb.backup.pg_snapshot_info:
    database: worb
  register: snaps

- name: Show the newest one
  ansible.builtin.debug:
    msg: "{{ snaps.snapshots[0].path }} {{ snaps.snapshots[0].size_bytes }} bytes"
  when: snaps.snapshots | length > 0
'''

RETURN = r'''
snapshots:
  description: Snapshots, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    file:
      description: File (or directory) name.
      type: str
      sample: worb-2026-01-07T03:00:00.dump.zst
    path:
      description: Full path.
      type: str
    database:
      description: Database the snapshot is of.
      type: str
    time:
      description: UTC time of the snapshot.
      type: str
      sample: "2026-01-07T03:00:00"
    size_bytes:
      description: Size in bytes.
      type: int
    sha256:
      description: sha256 recorded when it was written.
      type: str
    verified:
      description: True unless its last verification failed.
      type: bool
    verified_at:
      description: UTC time the snapshot's status was established (when it was made, or the
        verification that changed it).
      type: str
    status:
      description: V(ok) or V(failed_verification).
      type: str
    exists:
      description: Whether the file is present on disk.
      type: bool
    format:
      description: Archive format.
      type: str
    compression:
      description: Compression.
      type: str
count:
  description: Number of snapshots listed.
  returned: always
  type: int
size_bytes:
  description: Total size of the listed snapshots.
  returned: always
  type: int
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.codeb.backup.plugins.module_utils import spec
from ansible_collections.codeb.backup.plugins.module_utils.postgres import options
from ansible_collections.codeb.backup.plugins.module_utils.postgres.store import list_snapshots
from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error


def main():
    module = AnsibleModule(argument_spec=spec.argument_spec(options.INFO_OPTIONS),
                           supports_check_mode=True)
    try:
        snapshots = list_snapshots(module.params['backup_dir'], module.params['database'])
    except Exception as exc:  # every failure, whatever its type, as a result naming what failed
        module.fail_json(**as_backup_error(exc, 'pg_snapshot_info').as_result())
    module.exit_json(changed=False, snapshots=snapshots, count=len(snapshots),
                     size_bytes=sum(s.get('size_bytes') or 0 for s in snapshots))


if __name__ == '__main__':
    main()
