# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every option of the env store, defined once.

``env_backup`` and ``env_backup_info`` build their ``argument_spec`` from these tuples and
``codeb-backup env …`` its flags, so a name, a type or a default is written only here.
"""

from __future__ import annotations

from ansible_collections.codeb.backup.plugins.module_utils import metrics
from ansible_collections.codeb.backup.plugins.module_utils.env.store import (
    DEFAULT_ENVIRONMENT, DEFAULT_ROOT, TRIGGERS)
from ansible_collections.codeb.backup.plugins.module_utils.locking import lock_timeout_option
from ansible_collections.codeb.backup.plugins.module_utils.spec import Option

DEFAULT_MODE = '0600'
DEFAULT_VERSION = 'current'

PROJECT = Option('project', required=True, help='project name (e.g. worb)')
ENVIRONMENT = Option('environment', default=DEFAULT_ENVIRONMENT, help='environment name')
ROOT = Option('root', type='path', default=DEFAULT_ROOT, help='store root')
# Where a store is: every entry point takes these three.
STORE = (PROJECT, ENVIRONMENT, ROOT)

SRC = Option('src', type='path', help='the .env file to back up ("-": stdin)')
CONTENT = Option('content', no_log=True)
# ``values`` is a mapping and a secret: the host command reads it from --values-file.
VALUES = Option('values', type='dict', no_log=True)
TRIGGER = Option('trigger', choices=TRIGGERS, help='why this backup runs')
VERSION = Option('version', default=DEFAULT_VERSION,
                 help='master, current or a timestamp YYYY-MM-DDTHH:MM:SS')
DEST = Option('dest', type='path', help="the app's .env file to write")
OWNER = Option('owner', help='owner of dest (default: keep)')
GROUP = Option('group', help='group of dest (default: keep)')
MODE = Option('mode', type='raw', default=DEFAULT_MODE, help='mode of dest')
DEST_OPTIONS = (DEST, OWNER, GROUP, MODE)
LOCK_TIMEOUT = lock_timeout_option(of='the same project/environment')
METRICS_DIR = metrics.METRICS_DIR_OPTION
WRITING = (LOCK_TIMEOUT, METRICS_DIR)
VERIFY = Option('verify', type='bool', default=False,
                help='fail if any file does not match its sha256')
STATE = Option('state', default='present', choices=('present', 'restored'))

# The options of the env_backup module, in its documentation's order.
BACKUP_MODULE = STORE + (STATE, SRC, CONTENT, VALUES, TRIGGER, VERSION) + DEST_OPTIONS + WRITING
# The options of the env_backup_info module.
INFO_MODULE = STORE + (VERIFY,)
