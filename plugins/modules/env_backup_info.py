#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: env_backup_info
short_description: List the versions of a project's .env backups
version_added: "0.1.0"
description:
  - Lists the versions recorded by M(codeb.backup.env_backup) for one project and environment,
    oldest first, each with its time, trigger, sha256, size and the names of keys added,
    removed and changed (never values); what C(codeb-backup env list) prints.
  - Also returns the store's files with their actual sha256, which is what a replica on the
    backup host is compared with.
  - With O(verify=true) every file is hashed and compared with C(backup-log.json); a mismatch
    or a missing file fails the task.
  - Only evidence (a missing file, a different sha256) is reported in C(problems); a file or
    directory that cannot be read fails the task with the reason instead, and never makes a
    version look damaged. A C(backup-log.json) entry whose file name is not a plain version
    file name of the store (for example C(../x.env)) or whose fields have the wrong type is
    refused before any file is opened.
  - Read-only; never changes anything. A project or environment without backups is not an
    error (C(exists=false), C(versions=[])).
author:
  - codeb.backup maintainers (@codeb)
options:
  verify:
    description:
      - Fail unless every version, C(master.env) and C(current.env) match their sha256 in the log.
    type: bool
    default: false
seealso:
  - module: codeb.backup.env_backup
extends_documentation_fragment:
  - codeb.backup.env
  - ansible.builtin.action_common_attributes
  - codeb.backup.attributes.info_module
'''

EXAMPLES = r'''
- name: List the versions of worb's production .env
  codeb.backup.env_backup_info:
    project: worb
  register: worb_env

- name: Show them
  ansible.builtin.debug:
    msg: "{{ worb_env.versions | map(attribute='version') | list }}"

- name: Check every stored file against its sha256
  codeb.backup.env_backup_info:
    project: worb
    environment: staging
    verify: true
'''

RETURN = r'''
project:
  description: The project.
  returned: always
  type: str
environment:
  description: The environment.
  returned: always
  type: str
store_path:
  description: The store directory.
  returned: always
  type: str
exists:
  description: Whether the store directory exists.
  returned: always
  type: bool
count:
  description: Number of versions.
  returned: always
  type: int
  sample: 5
current:
  description: The current version's timestamp (null without versions).
  returned: always
  type: str
  sample: "2026-01-07T10:30:00"
master:
  description: The master (first) version's timestamp.
  returned: always
  type: str
  sample: "2026-01-01T09:00:00"
versions:
  description: The versions, oldest first, as logged in C(backup-log.json).
  returned: always
  type: list
  elements: dict
  contains:
    version:
      description: The version's UTC timestamp, what O(codeb.backup.env_backup#module:version) takes.
      type: str
    file:
      description: File name in the store.
      type: str
    time:
      description: When it was recorded (UTC).
      type: str
    trigger:
      description: C(set), C(deploy), C(daily) or C(manual).
      type: str
    sha256:
      description: sha256 of the file.
      type: str
    size_bytes:
      description: Size in bytes.
      type: int
    master:
      description: Whether this is the master (first) version.
      type: bool
    keys:
      description: Number of keys in the version.
      type: int
    source:
      description: Where it came from (the O(codeb.backup.env_backup#module:src) path, V(content) or V(values)).
      type: str
    keys_added:
      description: Names of keys added against the previous version.
      type: list
      elements: str
    keys_removed:
      description: Names of keys removed.
      type: list
      elements: str
    keys_changed:
      description: Names of keys whose value changed.
      type: list
      elements: str
files:
  description: The store's committed files (versions, C(master.env), C(current.env) and
    C(backup-log.json) last), each with its actual sha256 and size.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "master.env", "sha256": "9f8...", "size_bytes": 120}]
problems:
  description: Files missing or not matching their logged sha256.
  returned: always
  type: list
  elements: str
verified:
  description: Whether O(verify) was requested (and therefore passed).
  returned: always
  type: bool
available_environments:
  description: Environments that do have backups for this project, when this one does not exist.
  returned: when exists is false
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.codeb.backup.plugins.module_utils.env import jobs
from ansible_collections.codeb.backup.plugins.module_utils.env.options import INFO_MODULE
from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error
from ansible_collections.codeb.backup.plugins.module_utils.spec import argument_spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(INFO_MODULE), supports_check_mode=True)
    p = module.params
    try:
        result = jobs.listing(p['root'], p['project'], p['environment'], verify=p['verify'])
    except Exception as exc:  # every failure, whatever its type, as a result naming what failed
        module.fail_json(**as_backup_error(exc, 'env_backup_info').as_result())
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()
