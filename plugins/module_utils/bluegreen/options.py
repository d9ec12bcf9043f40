# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every option of the blue-green modules and host commands, defined once.

``slot_rollback`` and ``traffic_switch`` build their ``argument_spec`` from these tuples,
and ``codeb-backup slot-status|traffic-switch|traffic-status`` their flags.
"""

from __future__ import annotations

from ansible_collections.codeb.backup.plugins.module_utils import metrics
from ansible_collections.codeb.backup.plugins.module_utils.bluegreen import slots, traffic
from ansible_collections.codeb.backup.plugins.module_utils.locking import lock_timeout_option
from ansible_collections.codeb.backup.plugins.module_utils.spec import Option

PROJECT = Option('project', required=True, help='project name (e.g. worb)')
LOCK_TIMEOUT = lock_timeout_option(of='the same project')
METRICS_DIR = metrics.METRICS_DIR_OPTION

# ---- the slot state (slot_rollback, codeb-backup slot-status)
SLOT_STATE_DIR = Option('state_dir', type='path', default=slots.DEFAULT_STATE_DIR,
                        help='directory of the <project>.json slot state files')
# Options only one state of slot_rollback takes: the module refuses them with another.
DEPLOY_ONLY = (
    Option('team_id'),
    Option('version'),
    Option('slot', choices=slots.SLOTS),
    Option('db_snapshot'),
    Option('redis_snapshot'),
    Option('env_backup'),
)
ROLLBACK_ONLY = (
    Option('to_version'),
    Option('rolled_back_by'),
    Option('safety_db_snapshot'),
    Option('safety_env_backup'),
    Option('safety_redis_snapshot'),
    Option('expect_generation', type='int'),
)
# They only check that the target slot has the snapshot recorded: the caller restores it.
REQUIRE = tuple(
    Option(slots.REQUIRE_PARAMS[kind], type='bool', default=False, aliases=('restore_' + kind,))
    for kind in ('db', 'redis', 'env'))
SLOT_ROLLBACK_MODULE = (
    PROJECT,
    Option('state', default='query', choices=('deployed', 'rolled_back', 'query')),
    SLOT_STATE_DIR,
    Option('deployed_by'),
) + DEPLOY_ONLY + ROLLBACK_ONLY + REQUIRE + (LOCK_TIMEOUT, METRICS_DIR)
SLOT_STATUS_CLI = (PROJECT, SLOT_STATE_DIR)

# ---- the traffic switch (traffic_switch, codeb-backup traffic-switch|traffic-status)
SLOT = Option('slot', choices=traffic.SLOTS, help='the slot to send traffic to')
INCLUDE_DIR = Option('include_dir', type='path', default=traffic.DEFAULT_INCLUDE_DIR,
                     help='directory of the <project>-active.conf includes')
TRAFFIC_STATE_DIR = Option('state_dir', type='path', default=traffic.DEFAULT_STATE_DIR,
                           help='where a switch records what nginx applied')
NGINX = (
    Option('nginx_binary', type='path', default=traffic.DEFAULT_NGINX_BINARY),
    Option('nginx_conf', type='path', default=traffic.DEFAULT_NGINX_CONF),
    Option('nginx_prefix', type='path'),
    Option('pid_file', type='path', default=traffic.DEFAULT_PID_FILE),
)
RELOAD_TIMEOUT = Option('reload_timeout', type='float', default=traffic.DEFAULT_RELOAD_TIMEOUT,
                        help='seconds to wait for nginx to run the new configuration')
TRAFFIC_SWITCH_MODULE = (
    PROJECT, SLOT,
    Option('state', default='switched', choices=('switched', 'present', 'query')),
    INCLUDE_DIR) + NGINX + (TRAFFIC_STATE_DIR, METRICS_DIR, RELOAD_TIMEOUT, LOCK_TIMEOUT)
TRAFFIC_SWITCH_CLI = (PROJECT, SLOT.replace(required=True), METRICS_DIR, INCLUDE_DIR) + NGINX \
    + (TRAFFIC_STATE_DIR, RELOAD_TIMEOUT, LOCK_TIMEOUT)
TRAFFIC_STATUS_CLI = (PROJECT, INCLUDE_DIR, TRAFFIC_STATE_DIR)
