#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: slot_rollback
short_description: Record blue-green deploys and rollbacks in a project's slot state
version_added: "0.1.0"
description:
  - Keeps one JSON file per project with the blue-green slot state of the codeb design
    (C(projectName), C(teamId), C(activeSlot), C(blue) and C(green) with C(name), C(state),
    C(version), C(deployedBy), C(dbSnapshot), C(redisSnapshot), C(envBackup), plus
    C(lastUpdated), a C(generation) counter and the last 20 events in C(history)).
  - I(state=deployed) records I(version) into the inactive slot (blue for a project's first
    deploy) and makes it active; the previously active slot becomes C(grace), ready for a
    rollback.
  - The snapshots given with a deploy (I(db_snapshot), I(redis_snapshot), I(env_backup)) were
    taken just before it, so they hold the data the previously active release ran with; they
    are recorded on that slot (on a first deploy, only in the history). A rollback to it with
    a restore brings back exactly the data it left behind.
  - I(state=rolled_back) makes the other slot active, or the slot holding I(to_version). The
    slot traffic left becomes C(rolled_back); when I(safety_db_snapshot) is given it becomes
    that slot's C(dbSnapshot), so a later roll-forward with a DB restore brings that data back.
  - I(state=query) only reads.
  - This module records state; it does not move traffic or restore data. C(playbooks/rollback.yml)
    runs the whole sequence (preflight, safety snapshot, restores, M(codeb.backup.traffic_switch),
    then this module).
  - A rollback is refused, and nothing is changed, when the project is unknown, the target
    slot is empty, I(to_version) is not in a slot, or a restore is asked for
    (I(restore_db), I(restore_redis), I(restore_env)) and the target slot has no such snapshot
    recorded.
  - Writes are atomic (temporary file, fsync, rename, directory fsync) and made under a
    per-project lock. Which slot is current is read from the file's C(activeSlot), never from
    file times.
author:
  - codeb.backup contributors (@codeb)
options:
  project:
    description:
      - The project (one path component; letters, digits, C(_), C(-) and C(.)).
    type: str
    required: true
  state:
    description:
      - C(deployed) records a deploy, C(rolled_back) records a rollback, C(query) only reads.
    type: str
    choices: [deployed, rolled_back, query]
    default: query
  state_dir:
    description:
      - Directory holding C(<project>.json) slot state files.
    type: path
    default: /var/lib/codeb-backup/slots
  team_id:
    description:
      - The C(teamId) to record (I(state=deployed)). Defaults to C(default) for a new project.
    type: str
  version:
    description:
      - The version being deployed. Required with I(state=deployed).
    type: str
  slot:
    description:
      - With I(state=deployed), the slot the release was deployed into. It must be the
        inactive slot; the deploy is refused otherwise, so a concurrent deploy cannot make
        the state lie.
    type: str
    choices: [blue, green]
  deployed_by:
    description:
      - Who deployed or rolled back (an API key id, a user name); recorded as C(deployedBy)
        and in the history.
    type: str
  db_snapshot:
    description:
      - Name of the database snapshot taken just before this deploy (the C(file) returned by
        M(codeb.backup.pg_snapshot)); recorded on the slot becoming C(grace).
    type: str
  redis_snapshot:
    description:
      - Name of the Redis snapshot taken before this deploy.
    type: str
  env_backup:
    description:
      - Version of the ENV backup taken with this deploy (from M(codeb.backup.env_backup)).
    type: str
  to_version:
    description:
      - With I(state=rolled_back), roll back to the slot holding this version instead of the
        other slot. If that slot is already active nothing changes, which makes the task
        idempotent; without I(to_version), every run switches to the other slot.
    type: str
  restore_db:
    description:
      - The rollback restores the database; refuse unless the target slot has a C(dbSnapshot).
    type: bool
    default: false
  restore_redis:
    description:
      - The rollback restores Redis; refuse unless the target slot has a C(redisSnapshot).
    type: bool
    default: false
  restore_env:
    description:
      - The rollback restores the ENV file; refuse unless the target slot has an C(envBackup).
    type: bool
    default: false
  safety_db_snapshot:
    description:
      - Name of the snapshot of the current database taken just before the rollback restored
        an older one. Recorded as the C(dbSnapshot) of the slot traffic leaves.
    type: str
  safety_env_backup:
    description:
      - Version of the ENV backup of the current C(.env) taken just before the rollback
        restored an older one. Recorded as the C(envBackup) of the slot traffic leaves.
    type: str
  safety_redis_snapshot:
    description:
      - Name of the snapshot of Redis taken just before the rollback restored an older one.
        Recorded as the C(redisSnapshot) of the slot traffic leaves.
    type: str
  expect_generation:
    description:
      - Refuse the rollback if the state's C(generation) is no longer this value (the value a
        preflight read), so two concurrent rollbacks cannot both record.
    type: int
  lock_timeout:
    description:
      - Seconds to wait for another change of the same project's state before failing.
    type: float
    default: 60
  metrics_dir:
    description:
      - node_exporter textfile directory for the C(bluegreen_rollback) job metrics written by
        I(state=rolled_back). An empty string disables them.
    type: path
    default: /var/lib/prometheus/node-exporter
notes:
  - Supports check mode (the rollback preflight runs fully and nothing is written) and diff
    mode (the state file before and after).
seealso:
  - module: codeb.backup.traffic_switch
  - module: codeb.backup.pg_snapshot
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
  diff_mode:
    support: full
'''

EXAMPLES = r'''
- name: Record v1.2.3 as deployed into green with its snapshots
  codeb.backup.slot_rollback:
    project: worb
    state: deployed
    slot: green
    version: v1.2.3
    deployed_by: key_abc123
    db_snapshot: worb-2026-01-07T10:00:00.dump

- name: Preflight a rollback with DB restore (writes nothing)
  codeb.backup.slot_rollback:
    project: worb
    state: rolled_back
    restore_db: true
  check_mode: true
  register: plan

- name: Show which slot serves worb
  codeb.backup.slot_rollback:
    project: worb
  register: slots

- name: Record a rollback to v1.2.2 (idempotent thanks to to_version)
  codeb.backup.slot_rollback:
    project: worb
    state: rolled_back
    to_version: v1.2.2
    safety_db_snapshot: worb-2026-01-07T11:00:00.dump
'''

RETURN = r'''
slot_state:
  description: The project's whole slot state after the task (before it, in check mode), or null if the project has none.
  returned: always
  type: dict
  sample:
    projectName: worb
    teamId: default
    activeSlot: blue
    blue: {name: blue, state: active, version: v1.2.3, dbSnapshot: worb-2026-01-07T10:00:00.dump}
    green: {name: green, state: grace, version: v1.2.2}
    lastUpdated: "2026-01-07T10:00:00Z"
    generation: 4
    history: []
summary:
  description: Flat view of the state.
  returned: always
  type: dict
  sample: {project: worb, active_slot: blue, active_version: v1.2.3, inactive_slot: green,
           inactive_version: v1.2.2, generation: 4}
slot:
  description: The slot deployed into (deployed), rolled back to (rolled_back) or active (query).
  returned: always
  type: str
  sample: green
rollback:
  description: The rollback plan; C(db_snapshot), C(redis_snapshot), C(env_backup) are the target slot's snapshots to restore.
  returned: when state is rolled_back
  type: dict
  sample: {target_slot: green, target_version: v1.2.2, from_slot: blue, from_version: v1.2.3,
           db_snapshot: worb-2026-01-06T10:00:00.dump, changed: true, generation: 4}
exists:
  description: Whether the project has a state file.
  returned: when state is query
  type: bool
state_file:
  description: The project's slot state file.
  returned: always
  type: str
duration_seconds:
  description: Time the task took.
  returned: always
  type: float
size_bytes:
  description: Size of the state file after the task.
  returned: always
  type: int
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.codeb.backup.plugins.module_utils import slot_state
from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error

_ONLY_FOR = {
    'version': 'deployed', 'slot': 'deployed', 'db_snapshot': 'deployed',
    'redis_snapshot': 'deployed', 'env_backup': 'deployed', 'team_id': 'deployed',
    'to_version': 'rolled_back', 'safety_db_snapshot': 'rolled_back',
    'safety_env_backup': 'rolled_back', 'safety_redis_snapshot': 'rolled_back',
    'expect_generation': 'rolled_back',
}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            project=dict(type='str', required=True),
            state=dict(type='str', default='query', choices=['deployed', 'rolled_back', 'query']),
            state_dir=dict(type='path', default=slot_state.DEFAULT_STATE_DIR),
            team_id=dict(type='str'),
            version=dict(type='str'),
            slot=dict(type='str', choices=list(slot_state.SLOTS)),
            deployed_by=dict(type='str'),
            db_snapshot=dict(type='str'),
            redis_snapshot=dict(type='str'),
            env_backup=dict(type='str'),
            to_version=dict(type='str'),
            restore_db=dict(type='bool', default=False),
            restore_redis=dict(type='bool', default=False),
            restore_env=dict(type='bool', default=False),
            safety_db_snapshot=dict(type='str'),
            safety_env_backup=dict(type='str'),
            safety_redis_snapshot=dict(type='str'),
            expect_generation=dict(type='int'),
            lock_timeout=dict(type='float', default=60.0),
            metrics_dir=dict(type='path', default='/var/lib/prometheus/node-exporter'),
        ),
        required_if=[('state', 'deployed', ['version'])],
        supports_check_mode=True,
    )
    p = module.params
    for option, state in _ONLY_FOR.items():
        if p[option] not in (None, '') and p['state'] != state:
            module.fail_json(msg='%s only applies to state=%s (state is %s)'
                             % (option, state, p['state']), param=option)
    try:
        if p['state'] == 'deployed':
            result = slot_state.record_deploy(
                p['state_dir'], p['project'], p['version'], check_mode=module.check_mode,
                lock_timeout=p['lock_timeout'], deployed_by=p['deployed_by'],
                db_snapshot=p['db_snapshot'] or None, redis_snapshot=p['redis_snapshot'] or None,
                env_backup=p['env_backup'] or None, slot=p['slot'], team_id=p['team_id'])
        elif p['state'] == 'rolled_back':
            require = [kind for kind in ('db', 'redis', 'env') if p['restore_%s' % kind]]
            result = slot_state.record_rollback(
                p['state_dir'], p['project'], to_version=p['to_version'], require=require,
                rolled_back_by=p['deployed_by'], safety_db_snapshot=p['safety_db_snapshot'] or None,
                expect_generation=p['expect_generation'], check_mode=module.check_mode,
                lock_timeout=p['lock_timeout'], metrics_dir=p['metrics_dir'],
                safety_env_backup=p['safety_env_backup'] or None,
                safety_redis_snapshot=p['safety_redis_snapshot'] or None)
        else:
            result = slot_state.query(p['state_dir'], p['project'])
    except Exception as exc:  # every failure, whatever its type, as a result naming what failed
        module.fail_json(**as_backup_error(exc, 'slot_rollback').as_result())
    diff = result.pop('diff')
    if module._diff:
        result['diff'] = diff
    module.exit_json(**result)


if __name__ == '__main__':
    main()
