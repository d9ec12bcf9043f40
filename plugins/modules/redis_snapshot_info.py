#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: redis_snapshot_info
short_description: List the Redis snapshots in a backup directory
version_added: "0.1.0"
description:
  - Reads C({backup_dir}/manifest.json) written by M(codeb.backup.redis_snapshot) and returns
    its entries, newest first, with where C(current.rdb) and C(current.aof) point.
  - With O(verify=true) each file's sha256 is recomputed and compared with the manifest.
  - Read-only; never changes anything.
author:
  - codeb.backup contributors (@codeb)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - codeb.backup.attributes.info_module
  - codeb.backup.redis.store
options:
  verify:
    description: Recompute every sha256 and report it in C(verified) of each entry of RV(snapshots).
    type: bool
    default: false
seealso:
  - module: codeb.backup.redis_snapshot
'''

EXAMPLES = r'''
- name: List the Redis snapshots
  codeb.backup.redis_snapshot_info:
  register: redis_snaps

- name: Show the newest RDB snapshot
  ansible.builtin.debug:
    msg: "{{ (redis_snaps.snapshots | selectattr('kind', 'eq', 'rdb') | first).file }}"

- name: Fail if any stored snapshot is damaged
  codeb.backup.redis_snapshot_info:
    verify: true
  register: checked
  failed_when: checked.damaged | length > 0
'''

RETURN = r'''
snapshots:
  description: Manifest entries, newest first.
  returned: always
  type: list
  elements: dict
  sample:
    - file: appendonly-2026-01-07T11:00:00.aof.tar
      kind: aof
      status: ok
      time: "2026-01-07T11:00:00"
      files: [appendonly.aof.1.base.rdb, appendonly.aof.1.incr.aof]
      keys: 1002
      sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae
      size_bytes: 20480
      path: /opt/codeb/db-backup/redis/appendonly-2026-01-07T11:00:00.aof.tar
      present: true
current:
  description: The file names C(current.rdb) and C(current.aof) point at (null if absent).
  returned: always
  type: dict
  sample: {rdb: dump-2026-01-07T10:00:00.rdb, aof: appendonly-2026-01-07T10:00:00.aof.tar}
damaged:
  description:
    - Files that are missing, fail their sha256 (only checked with O(verify=true)), or that a
      verification or restore marked C(failed_verification).
  returned: always
  type: list
  elements: str
size_bytes:
  description: Total size of the listed snapshots.
  returned: always
  type: int
'''

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error
from ansible_collections.codeb.backup.plugins.module_utils.spec import argument_spec
from ansible_collections.codeb.backup.plugins.module_utils.redis.options import (
    INFO_OPTIONS, POINTERS,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.store import list_snapshots


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(INFO_OPTIONS),
        supports_check_mode=True,
    )
    backup_dir = module.params['backup_dir']
    try:
        entries = list_snapshots(backup_dir, verify=module.params['verify'])
    except Exception as exc:  # every failure, whatever its type, as a result naming what failed
        module.fail_json(**as_backup_error(exc, 'redis_snapshot_info').as_result())
    if module.params['snapshot_format']:
        entries = [e for e in entries if e.get('kind') == module.params['snapshot_format']]
    current = {}
    for kind, name in POINTERS.items():
        link = os.path.join(backup_dir, name)
        current[kind] = os.readlink(link) if os.path.islink(link) else None
    damaged = [e['file'] for e in entries
               if not e['present'] or (module.params['verify'] and not e['verified'])
               or e.get('status') == 'failed_verification']
    module.exit_json(changed=False, snapshots=entries, current=current, damaged=damaged,
                     size_bytes=sum(int(e.get('size_bytes') or 0) for e in entries))


if __name__ == '__main__':
    main()
