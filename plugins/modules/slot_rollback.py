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
  - Keeps one JSON file per project with its blue-green slot state
    (C(projectName), C(teamId), C(activeSlot), C(blue) and C(green) with C(name), C(state),
    C(version), C(deployedBy), C(dbSnapshot), C(redisSnapshot), C(envBackup), and on a slot
    traffic was rolled back from C(rolledBackAt) and C(rolledBackBy), plus
    C(lastUpdated), a C(generation) counter and the last 20 events in C(history)).
  - O(state=deployed) records O(version) into the inactive slot (blue for a project's first
    deploy) and makes it active; the previously active slot becomes C(grace), ready for a
    rollback.
  - The snapshots given with a deploy (O(db_snapshot), O(redis_snapshot), O(env_backup)) were
    taken just before it, so they hold the data the previously active release ran with; they
    are recorded on that slot (on a first deploy, only in the history). A rollback to it with
    a restore brings back exactly the data it left behind.
  - O(state=rolled_back) makes the other slot active, or the slot holding O(to_version). The
    slot traffic left becomes C(rolled_back); when O(safety_db_snapshot) is given it becomes
    that slot's C(dbSnapshot), so a later roll-forward with a DB restore brings that data back.
  - O(state=query) only reads.
  - This module records state; it does not move traffic or restore data. C(playbooks/rollback.yml)
    runs the whole sequence (preflight, safety snapshot, restores, M(codeb.backup.traffic_switch),
    then this module).
  - A rollback is refused, and nothing is changed, when the project is unknown, the target
    slot is empty, O(to_version) is not in a slot, or a snapshot is required
    (O(require_db_snapshot), O(require_redis_snapshot), O(require_env_backup)) and the target
    slot has no such snapshot recorded. These options restore nothing; the caller, which is
    about to restore that snapshot, makes sure it is recorded before anything changes.
  - Writes are atomic (temporary file, fsync, rename, directory fsync) and made under a
    per-project lock. Which slot is current is read from the file's C(activeSlot), never from
    file times.
author:
  - codeb.backup contributors (@codeb)
options:
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
      - The C(teamId) to record (O(state=deployed)). Defaults to C(default) for a new project.
    type: str
  version:
    description:
      - The version being deployed. Required with O(state=deployed).
    type: str
  slot:
    description:
      - With O(state=deployed), the slot the release was deployed into. It must be the
        inactive slot; the deploy is refused otherwise, so a concurrent deploy cannot make
        the state lie.
    type: str
    choices: [blue, green]
  deployed_by:
    description:
      - With O(state=deployed), who deployed (an API key id, a user name); recorded as the
        slot's C(deployedBy) and as the history event's C(by).
      - With O(state=rolled_back) it is taken as O(rolled_back_by) when that is not given, as
        before O(rolled_back_by) existed.
    type: str
  rolled_back_by:
    description:
      - With O(state=rolled_back), who rolled back; recorded as C(rolledBackBy) of the slot
        traffic leaves and as the history event's C(by). The slot's C(deployedBy) is kept.
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
      - With O(state=rolled_back), roll back to the slot holding this version instead of the
        other slot. If that slot is already active nothing changes, which makes the task
        idempotent; without O(to_version), every run switches to the other slot.
    type: str
  require_db_snapshot:
    description:
      - With O(state=rolled_back), refuse unless the target slot has a C(dbSnapshot) recorded;
        set it when the caller restores that snapshot (C(playbooks/rollback.yml) with
        C(-e restore_db=true) does). Restores nothing itself; the event's C(restored) lists it.
    type: bool
    default: false
    aliases: [restore_db]
  require_redis_snapshot:
    description:
      - With O(state=rolled_back), refuse unless the target slot has a C(redisSnapshot)
        recorded. Restores nothing itself.
    type: bool
    default: false
    aliases: [restore_redis]
  require_env_backup:
    description:
      - With O(state=rolled_back), refuse unless the target slot has an C(envBackup) recorded.
        Restores nothing itself.
    type: bool
    default: false
    aliases: [restore_env]
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
        O(state=rolled_back). An empty string disables them.
    type: path
    default: /var/lib/prometheus/node-exporter
notes:
  - Supports check mode (the rollback preflight runs fully and nothing is written) and diff
    mode (the state file before and after).
seealso:
  - module: codeb.backup.traffic_switch
  - module: codeb.backup.pg_snapshot
extends_documentation_fragment:
  - codeb.backup.bluegreen
  - ansible.builtin.action_common_attributes
  - codeb.backup.attributes
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

- name: Preflight a rollback that will restore the database (writes nothing; refused unless
    the target slot has a dbSnapshot recorded)
  codeb.backup.slot_rollback:
    project: worb
    state: rolled_back
    require_db_snapshot: true
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
    rolled_back_by: ops-oncall
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

from ansible_collections.codeb.backup.plugins.module_utils.bluegreen import slots
from ansible_collections.codeb.backup.plugins.module_utils.bluegreen.options import (
    DEPLOY_ONLY, ROLLBACK_ONLY, SLOT_ROLLBACK_MODULE)
from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error
from ansible_collections.codeb.backup.plugins.module_utils.spec import argument_spec

_ONLY_FOR = dict([(option.name, 'deployed') for option in DEPLOY_ONLY]
                 + [(option.name, 'rolled_back') for option in ROLLBACK_ONLY])


def _record(p, check_mode):
    if p['state'] == 'deployed':
        return slots.record_deploy(
            p['state_dir'], p['project'], p['version'], check_mode=check_mode,
            lock_timeout=p['lock_timeout'], deployed_by=p['deployed_by'],
            db_snapshot=p['db_snapshot'] or None, redis_snapshot=p['redis_snapshot'] or None,
            env_backup=p['env_backup'] or None, slot=p['slot'], team_id=p['team_id'])
    if p['state'] == 'rolled_back':
        require = [kind for kind, name in sorted(slots.REQUIRE_PARAMS.items()) if p[name]]
        return slots.record_rollback(
            p['state_dir'], p['project'], to_version=p['to_version'], require=require,
            rolled_back_by=p['rolled_back_by'] or p['deployed_by'],
            safety_db_snapshot=p['safety_db_snapshot'] or None,
            expect_generation=p['expect_generation'], check_mode=check_mode,
            lock_timeout=p['lock_timeout'], metrics_dir=p['metrics_dir'],
            safety_env_backup=p['safety_env_backup'] or None,
            safety_redis_snapshot=p['safety_redis_snapshot'] or None)
    return slots.query(p['state_dir'], p['project'])


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(SLOT_ROLLBACK_MODULE),
        required_if=[('state', 'deployed', ['version'])],
        supports_check_mode=True,
    )
    p = module.params
    for option, state in sorted(_ONLY_FOR.items()):
        if p[option] not in (None, '') and p['state'] != state:
            module.fail_json(msg='%s only applies to state=%s (state is %s)'
                             % (option, state, p['state']), param=option)
    try:
        result = _record(p, module.check_mode)
    except Exception as exc:  # every failure, whatever its type, as a result naming what failed
        module.fail_json(**as_backup_error(exc, 'slot_rollback').as_result())
    diff = result.pop('diff')
    if module._diff:
        result['diff'] = diff
    module.exit_json(**result)


if __name__ == '__main__':
    main()
