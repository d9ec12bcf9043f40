# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The host command's ``codeb-backup slot-status``, ``traffic-switch`` and ``traffic-status``.

Flags come from the same :mod:`options` as the modules' ``argument_spec``.
"""

from __future__ import annotations

from ansible_collections.codeb.backup.plugins.module_utils.bluegreen import options as opt
from ansible_collections.codeb.backup.plugins.module_utils.bluegreen import slots, traffic
from ansible_collections.codeb.backup.plugins.module_utils.spec import add_arguments, params_from_args


def register_cli(subparsers):
    for name, summary, description, options, handler in _COMMANDS:
        parser = subparsers.add_parser(name, help=summary, description=description)
        add_arguments(parser, options)
        parser.set_defaults(handler=handler)


def _cli_slot_status(args):
    params = params_from_args(args, opt.SLOT_STATUS_CLI)
    result = slots.query(params['state_dir'], params['project'])
    if not result['exists']:
        slots.require_state(params['state_dir'], params['project'])  # fails naming the project
    result.pop('diff', None)
    return result


def _cli_switch(args):
    result = traffic.switch(**params_from_args(args, opt.TRAFFIC_SWITCH_CLI))
    result.pop('diff', None)
    return result


def _cli_traffic_status(args):
    params = params_from_args(args, opt.TRAFFIC_STATUS_CLI)
    return traffic.status(params['include_dir'], params['project'], params['state_dir'])


# (command, help, description, options, handler), in help order
_COMMANDS = (
    ('slot-status', 'show the blue-green slot state of a project (read-only)',
     'Print the slot state of a project: which slot is active, versions and the snapshots '
     'recorded with each deploy.', opt.SLOT_STATUS_CLI, _cli_slot_status),
    ('traffic-switch', 'point a project\'s nginx traffic at its blue or green slot',
     'Emergency switch without a control node: rewrite the project\'s active include '
     'atomically, run nginx -t (putting the old include back if it fails) and reload nginx. '
     'Does not change the slot state file; prefer playbooks/rollback.yml, which does both.',
     opt.TRAFFIC_SWITCH_CLI, _cli_switch),
    ('traffic-status', 'show which slot nginx sends a project\'s traffic to',
     'The slot of the last switch nginx applied, what the include says, and whether they '
     'agree (a switch interrupted before the reload makes them differ; switching again '
     'finishes or undoes it).', opt.TRAFFIC_STATUS_CLI, _cli_traffic_status),
)
