#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: pg_pitr_info
short_description: Backups, recovery window and the standby's seed backup of a pgBackRest stanza
version_added: "0.1.0"
description:
  - Reads C(pgbackrest info --output=json) for O(stanza) on the repository (backup) host and
    returns its backups, oldest first, and the recovery window they give.
  - With O(timeline) (and O(timeline_history)) of a primary it also returns RV(seed_backup),
    the newest backup a streaming standby of that primary can be seeded from. A backup of
    that timeline, or of an ancestor timeline that ended (stop LSN) at or before the point
    where the primary's history left it, qualifies; a backup on a dead branch (after an
    in-place PITR to a time before it) or one pgBackRest flagged with an error does not.
  - Read-only; never changes anything. An unknown O(stanza) is refused listing the known ones.
  - The host command C(codeb-backup pgbackrest-window) prints the same from cron or a shell.
author:
  - codeb.backup maintainers (@codeb)
extends_documentation_fragment:
  - codeb.backup.pgbackrest
  - ansible.builtin.action_common_attributes
  - codeb.backup.attributes.info_module
options:
  timeline:
    description:
      - The primary's current timeline; RV(seed_backup) is then chosen for a standby of
        that primary.
    type: int
  timeline_history:
    description:
      - With O(timeline), the text of the primary's timeline history file
        (C(pg_wal/<timeline>.history)); empty on timeline 1.
    type: str
    default: ""
seealso:
  - module: codeb.backup.pg_pitr
"""

EXAMPLES = r"""
- name: Show the recovery window
  codeb.backup.pg_pitr_info:
    stanza: codeb
  register: repository

- name: Choose the backup a standby of a primary on timeline 3 is seeded from
  codeb.backup.pg_pitr_info:
    stanza: codeb
    timeline: 3
    timeline_history: "{{ primary_history }}"
  register: seed
"""

RETURN = r"""
stanza:
  description: The stanza read.
  returned: always
  type: str
  sample: codeb
backups:
  description: The stanza's backups, oldest first.
  returned: always
  type: list
  elements: dict
  contains:
    label:
      description: pgBackRest label.
      type: str
    type:
      description: V(full), V(diff) or V(incr).
      type: str
    error:
      description: Whether pgBackRest flagged the backup with an error (never used for the window or the seed).
      type: bool
    timeline:
      description: Timeline the backup was taken on.
      type: int
    stop:
      description: When the backup ended (UTC).
      type: str
    size_bytes:
      description: Size of the cluster the backup copied.
      type: int
    repository_size_bytes:
      description: What the backup added to the repository.
      type: int
  sample: [{"label": "20260107-010002F", "type": "full", "error": false, "timeline": 1,
            "stop": "2026-01-07 01:00:07+00", "size_bytes": 123927995,
            "repository_size_bytes": 10213345}]
status:
  description: pgBackRest's status message of the stanza.
  returned: always
  type: str
  sample: ok
earliest:
  description: The earliest point a recovery can reach (end of the oldest valid backup); null without one.
  returned: always
  type: str
  sample: "2026-01-01 01:00:07+00"
newest_backup_stop:
  description: End of the newest valid backup; null without one.
  returned: always
  type: str
  sample: "2026-01-07 01:00:07+00"
seed_backup:
  description:
    - Label of the newest backup a standby of a primary on O(timeline) can start from (on that
      timeline, or on an ancestor and ended before the primary's history left it); null when
      none can.
  returned: when O(timeline) is set
  type: str
  sample: 20260107-010002F
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error
from ansible_collections.codeb.backup.plugins.module_utils.postgres import pgbackrest
from ansible_collections.codeb.backup.plugins.module_utils.spec import argument_spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(pgbackrest.options(pgbackrest.INFO_OPTIONS)),
                           supports_check_mode=True)
    p = module.params
    try:
        result = pgbackrest.info(p['stanza'], p['repo_user'], p['config'], p['timeline'],
                                 p['timeline_history'])
    except Exception as exc:  # every failure, whatever its type, as a result naming what failed
        module.fail_json(**as_backup_error(exc, 'pg_pitr_info').as_result())
    module.exit_json(**result)


if __name__ == '__main__':
    main()
