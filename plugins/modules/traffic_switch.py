#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: traffic_switch
short_description: Switch a project's nginx traffic between its blue and green slots
version_added: "0.1.0"
description:
  - nginx has two upstreams per project, C(codeb_<project>_blue) and C(codeb_<project>_green)
    (templated by the C(codeb.backup.bluegreen) role), and the project's server block includes
    C(<include_dir>/<project>-active.conf), which holds the C(proxy_pass) to the active one.
  - O(state=switched) rewrites that include atomically (temporary file, fsync, rename), runs
    C(nginx -t) with the real configuration and reloads nginx, then waits until nginx runs
    workers with the new configuration. If C(nginx -t) fails, the previous include is put
    back and nothing is reloaded, so traffic stays where it was, and the task fails with
    nginx's message.
  - O(state=present) creates the include pointing at O(slot) only when none exists (a
    role's first run); it never switches an existing one and does not reload.
  - O(state=query) reports the slot nginx serves (the last applied switch) and changes nothing.
  - The include is written before C(nginx -t) and the reload, so it alone does not tell what
    nginx serves. Only after a successful reload does the switch record what nginx applied
    (slot and sha256 of the include) in O(state_dir). A switch changes nothing only when the
    include and that record agree; a switch killed after writing the include but before the
    reload therefore is tested and reloaded again by the next run. If the record cannot be
    written after a reload, the previous include is put back and nginx reloaded again.
  - The active slot is read from the include's content and that record, never from file
    times. This module does not change the slot state file; see M(codeb.backup.slot_rollback).
author:
  - codeb.backup contributors (@codeb)
options:
  slot:
    description:
      - The slot to send traffic to. Required unless O(state=query).
    type: str
    choices: [blue, green]
  state:
    description:
      - C(switched) points traffic at O(slot); C(present) only creates a missing include;
        C(query) reads.
    type: str
    choices: [switched, present, query]
    default: switched
  include_dir:
    description:
      - Directory of the C(<project>-active.conf) includes.
    type: path
    default: /etc/nginx/codeb-bluegreen
  nginx_binary:
    description:
      - The nginx executable.
    type: path
    default: /usr/sbin/nginx
  nginx_conf:
    description:
      - The main nginx configuration file, passed as C(nginx -c) to C(nginx -t) and the reload.
    type: path
    default: /etc/nginx/nginx.conf
  nginx_prefix:
    description:
      - nginx prefix path (C(nginx -p)), for an nginx that runs with a prefix of its own.
    type: path
  pid_file:
    description:
      - nginx's pid file, used to find the master process and see the reload take effect.
    type: path
    default: /run/nginx.pid
  state_dir:
    description:
      - Directory where a switch records, after the reload succeeded, which include nginx
        applied (C(<project>.applied.json)).
    type: path
    default: /var/lib/codeb-backup/traffic
  metrics_dir:
    description:
      - node_exporter textfile directory for the outcome of O(state=switched)
        (C(kind="traffic_switch"), C(target) the project); every failure sets status 0.
      - An empty string disables metrics.
    type: path
    default: /var/lib/prometheus/node-exporter
  reload_timeout:
    description:
      - Seconds to wait for nginx to run workers with the new configuration after the reload.
    type: float
    default: 10
  lock_timeout:
    description:
      - Seconds to wait for another switch of the same project before failing.
    type: float
    default: 60
notes:
  - Check mode writes nothing; for a switch that would change something it runs C(nginx -t)
    on the current configuration and fails if nginx would refuse it.
  - Diff mode shows the active slot before and after.
seealso:
  - module: codeb.backup.slot_rollback
extends_documentation_fragment:
  - codeb.backup.bluegreen
  - ansible.builtin.action_common_attributes
  - codeb.backup.attributes
'''

EXAMPLES = r'''
- name: Send worb's traffic to the green slot
  codeb.backup.traffic_switch:
    project: worb
    slot: green

- name: Which slot serves worb?
  codeb.backup.traffic_switch:
    project: worb
    state: query
  register: traffic
'''

RETURN = r'''
slot:
  description: >-
    The slot traffic goes to after the task. For query, the slot of the last switch nginx applied;
    null if no switch was ever recorded.
  returned: always
  type: str
  sample: green
previous_slot:
  description: The slot traffic went to before the task; null if there was no include.
  returned: always
  type: str
  sample: blue
include:
  description: The active include file.
  returned: always
  type: str
  sample: /etc/nginx/codeb-bluegreen/worb-active.conf
upstream:
  description: The nginx upstream traffic goes to.
  returned: when slot is known
  type: str
  sample: codeb_worb_green
duration_seconds:
  description: Time the task took, including nginx -t and the reload.
  returned: always
  type: float
size_bytes:
  description: Size of the include file.
  returned: always
  type: int
include_slot:
  description: The slot the include points at (what nginx loads on its next reload).
  returned: when state is query
  type: str
  sample: green
in_sync:
  description: Whether the include is the one the last applied switch reloaded nginx with.
  returned: when state is query
  type: bool
msg:
  description:
    - With O(state=query), what nginx serves, and what to do when the include and the applied
      record disagree.
    - In check mode, what the real run would do.
  returned: when state is query, and in check mode
  type: str
  sample: would switch project worb to slot green and reload nginx
nginx_output:
  description: What C(nginx -t) said when it refused the configuration.
  returned: when nginx -t failed
  type: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.codeb.backup.plugins.module_utils.bluegreen import traffic
from ansible_collections.codeb.backup.plugins.module_utils.bluegreen.options import TRAFFIC_SWITCH_MODULE
from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error
from ansible_collections.codeb.backup.plugins.module_utils.spec import argument_spec


def _run(p, check_mode):
    if p['state'] == 'switched':
        return traffic.switch(
            p['project'], p['slot'], include_dir=p['include_dir'],
            nginx_binary=p['nginx_binary'], nginx_conf=p['nginx_conf'],
            nginx_prefix=p['nginx_prefix'], pid_file=p['pid_file'], check_mode=check_mode,
            lock_timeout=p['lock_timeout'], reload_timeout=p['reload_timeout'],
            state_dir=p['state_dir'], metrics_dir=p['metrics_dir'])
    if p['state'] == 'present':
        return traffic.ensure_include(p['project'], p['slot'], include_dir=p['include_dir'],
                                      check_mode=check_mode)
    return traffic.query(p['include_dir'], p['project'], p['state_dir'])


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(TRAFFIC_SWITCH_MODULE),
        required_if=[('state', 'switched', ['slot']), ('state', 'present', ['slot'])],
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = _run(p, module.check_mode)
    except Exception as exc:  # every failure, whatever its type, as a result naming what failed
        module.fail_json(**as_backup_error(exc, 'traffic_switch').as_result())
    diff = result.pop('diff')
    if module._diff and diff:
        result['diff'] = diff
    if module.check_mode and p['state'] != 'query':
        result['msg'] = _prediction(p, result)
    module.exit_json(**result)


def _prediction(p, result):
    """What the real run would do, in words (check mode)."""
    if not result['changed']:
        return 'nothing to do: project %s already points at slot %s' % (p['project'], p['slot'])
    if p['state'] == 'present':
        return 'would write the include of project %s for slot %s' % (p['project'], p['slot'])
    return 'would switch project %s to slot %s and reload nginx' % (p['project'], p['slot'])


if __name__ == '__main__':
    main()
