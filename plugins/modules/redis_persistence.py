#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: redis_persistence
short_description: Apply Redis persistence settings to a running instance with CONFIG SET
version_added: "0.1.0"
description:
  - Compares the persistence settings given in O(settings) with the live values
    (C(CONFIG GET)) and sets the ones that differ with C(CONFIG SET), so the running instance
    matches its configuration file without a restart.
  - Settings Redis cannot change safely at run time (C(dir), C(appenddirname),
    C(appendfilename)) are not set; they are returned in RV(restart_required) so the caller
    restarts the instance only when that list is not empty.
  - C(changed) is true when a setting was set live (in check mode, would be set). A setting
    listed only in RV(restart_required) does not make the task changed, since nothing was
    written.
  - Values are compared the way Redis reports them, so V(64mb) equals C(67108864), V(true)
    equals C(yes), and an empty C(save) list means C(save "") (RDB save points off).
  - This module does not rewrite the configuration file (no C(CONFIG REWRITE)); template the
    file with the role M(codeb.backup.redis_backup) and use this module to apply it live.
author:
  - codeb.backup contributors (@codeb)
requirements:
  - Python C(redis) client on the managed host (Debian C(python3-redis)).
attributes:
  check_mode:
    details: Reads the live values and reports what would be set; sets nothing.
  diff_mode:
    support: full
    details: Shows live values before and after for the managed settings.
options:
  settings:
    description:
      - Persistence settings as redis.conf names them. Supported keys are C(appendonly),
        C(appendfsync), C(auto-aof-rewrite-percentage), C(auto-aof-rewrite-min-size),
        C(aof-use-rdb-preamble), C(save), C(dir), C(dbfilename), C(appenddirname),
        C(appendfilename).
      - C(save) is a list of C([seconds, changes]) pairs (or C({seconds, changes}) dicts, or a
        string like C("900 1 300 10")); an empty list disables RDB save points.
    type: dict
    required: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - codeb.backup.attributes
  - codeb.backup.redis
seealso:
  - module: codeb.backup.redis_snapshot
  - module: community.general.redis
'''

EXAMPLES = r'''
- name: Apply the persistence settings live
  codeb.backup.redis_persistence:
    login_password: "{{ redis_password }}"
    settings:
      appendonly: true
      appendfsync: everysec
      auto-aof-rewrite-percentage: 100
      auto-aof-rewrite-min-size: 64mb
      save: [[900, 1], [300, 10], [60, 10000]]
  register: live

- name: Restart only when a setting cannot be applied live
  ansible.builtin.service:
    name: redis-server
    state: restarted
  when: live.restart_required | length > 0
'''

RETURN = r'''
applied:
  description: Settings changed live with CONFIG SET (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [appendfsync, save]
restart_required:
  description: Settings that differ but only take effect after a restart.
  returned: always
  type: list
  elements: str
  sample: [dir]
before:
  description: Live values before, as Redis reports them.
  returned: always
  type: dict
after:
  description: Values after the run (restart-only settings as they will be after a restart).
  returned: always
  type: dict
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error
from ansible_collections.codeb.backup.plugins.module_utils.spec import argument_spec
from ansible_collections.codeb.backup.plugins.module_utils.redis.options import (
    CONNECTION_OPTIONS, PERSISTENCE_OPTIONS, connection_params,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.connection import HAS_REDIS
from ansible_collections.codeb.backup.plugins.module_utils.redis.persistence import apply_settings


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(CONNECTION_OPTIONS + PERSISTENCE_OPTIONS),
        supports_check_mode=True,
    )
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib('redis (Debian: python3-redis)'))
    conn = connection_params(module.params)
    try:
        result = apply_settings(conn, module.params['settings'], module.check_mode)
    except Exception as exc:  # every failure, whatever its type, as a result naming what failed
        module.fail_json(**as_backup_error(exc, 'redis_persistence').as_result())
    if module._diff:
        result['diff'] = dict(before=result['before'], after=result['after'])
    module.exit_json(**result)


if __name__ == '__main__':
    main()
