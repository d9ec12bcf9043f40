#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: env_backup
short_description: Versioned backups of app .env files; set keys; restore a version
version_added: "0.1.0"
description:
  - Keeps the history of an app's C(.env) file per project and environment, in the layout
    C({root}/{project}/{environment}/) with C(master.env) (the first version, never modified
    afterwards), C(current.env), one C(YYYY-MM-DDTHH:MM:SS.env) (UTC) per version and
    C(backup-log.json). Directories are created C(0700), files C(0600).
  - I(state=present) records I(src) or I(content) as a new version when it differs from the
    current one (otherwise nothing changes and C(changed=false)), or applies I(values) to the
    current version (the C(we env set) of the codeb design), keeping comments, order and
    quoting of every other line byte for byte.
  - Every version is logged in C(backup-log.json) with its time, I(trigger), sha256 and the
    B(names) of the keys added, removed and changed. Values are never logged or returned.
  - I(state=restored) writes I(version) (C(master), C(current) or a timestamp) to I(dest)
    atomically (temporary file, fsync, rename) with I(mode), I(owner) and I(group), after
    checking the version's sha256. An unknown version fails with the list of available ones.
  - Before I(dest) is overwritten (I(state=restored), or I(values) with I(dest)), its live
    content is recorded as a version when it is in no version yet (someone edited the file
    by hand since the last backup), so nothing the app ran is ever lost.
  - With I(values) and I(dest), the keys are set in the live file's content (saved first as
    above), the result is recorded as a version and written to I(dest); this is the
    C(codeb-backup env set --dest) of the host command.
  - Check mode predicts and writes nothing. Diff mode shows which keys change, with every
    value masked.
  - Writes of one project/environment take a lock; a run killed at any point leaves the store
    consistent, and the next writing run repairs what it left (see C(docs/env.md)). A full or
    read-only disk fails the run with a message saying so and changes nothing recorded.
    Every run that writes records its outcome as node_exporter
    textfile metrics, C(kind=env) (backups) or C(kind=env_restore), C(target=project/environment).
  - The same code runs from cron as C(codeb-backup env backup|set|restore|list).
author:
  - codeb.backup maintainers (@codeb)
options:
  project:
    description:
      - The project (one path component; letters, digits, C(_), C(-) and C(.), starting with a
        letter or digit, at most 63 characters).
    type: str
    required: true
  environment:
    description:
      - The environment, named like I(project).
    type: str
    default: production
  root:
    description:
      - Root of the env store (an absolute path).
    type: path
    default: /opt/codeb/env-backup
  state:
    description:
      - C(present) records a version (from I(src), I(content) or I(values)).
      - C(restored) writes a version to I(dest).
    type: str
    choices: [present, restored]
    default: present
  src:
    description:
      - Path on the managed host of the C(.env) file to back up (I(state=present)).
      - Exactly one of I(src), I(content) and I(values) is required with I(state=present).
    type: path
  content:
    description:
      - The C(.env) text to record (I(state=present)). Never logged.
    type: str
  values:
    description:
      - "Keys to set in the current version: C({KEY: value}); a C(null) value removes the key.
        Only the lines defining these keys are rewritten (keeping C(export), spacing, comments and,
        where the value allows, the quoting); new keys are appended. Never logged."
      - Values must be strings or numbers; a YAML boolean is refused, quote it (C("true")).
    type: dict
  trigger:
    description:
      - Why this version is recorded, written to the log.
      - Defaults to C(set) with I(values), otherwise C(manual).
    type: str
    choices: [set, deploy, daily, manual]
  version:
    description:
      - With I(state=restored), the version to restore. C(master), C(current) or a UTC timestamp
        C(YYYY-MM-DDTHH:MM:SS) (a trailing C(.env) is accepted, as in the slot state's C(envBackup)).
    type: str
    default: current
  dest:
    description:
      - With I(state=restored), the app's C(.env) file to write (absolute path; its directory
        must exist). A symlink is followed and its target replaced.
      - With I(state=present) and I(values), the app's C(.env) file whose live content the keys
        are set in and which receives the result. Not allowed with I(src) or I(content).
    type: path
  owner:
    description:
      - Owner of I(dest) (name or uid). Default keeps the owner of an existing I(dest).
      - Used whenever I(dest) is written.
    type: str
  group:
    description:
      - Group of I(dest) (name or gid). Default keeps the group of an existing I(dest).
    type: str
  mode:
    description:
      - Permissions of I(dest), an octal string such as C("0600").
    type: raw
    default: "0600"
  lock_timeout:
    description:
      - Seconds to wait for another run on the same project/environment before failing.
    type: float
    default: 60
  metrics_dir:
    description:
      - node_exporter textfile collector directory for the job's metrics. Empty disables metrics.
    type: path
    default: /var/lib/prometheus/node-exporter
notes:
  - Supports check mode and diff mode. In diff mode every value is shown as C(********).
  - A live I(dest) whose content is in no version is recorded (trigger C(manual) for a restore,
    C(set) for I(values)) before it is overwritten; C(live_saved) says so.
seealso:
  - module: codeb.backup.env_backup_info
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
    details: Reads the store and I(dest) only; predicts the version, the keys that change and C(changed).
  diff_mode:
    support: full
    details: Key names only; every value is shown as C(********).
'''

EXAMPLES = r'''
- name: Back up the app's .env (no new version when unchanged)
  codeb.backup.env_backup:
    project: worb
    environment: production
    src: /srv/worb/shared/.env
    trigger: deploy

- name: Set two keys (the seed's `we env set`), recorded as a new version
  codeb.backup.env_backup:
    project: worb
    values:
      FEATURE_X: "on"
      SMTP_PASSWORD: "{{ vault_smtp_password }}"

- name: Remove a key
  codeb.backup.env_backup:
    project: worb
    values:
      OLD_KEY: null

- name: Set a key in the app's live .env (a hand edit there is saved first and kept)
  codeb.backup.env_backup:
    project: worb
    values:
      FEATURE_X: "on"
    dest: /srv/worb/shared/.env

- name: Restore the first version (master) to the app
  codeb.backup.env_backup:
    project: worb
    state: restored
    version: master
    dest: /srv/worb/shared/.env
    owner: worb
    group: worb

- name: Restore a version recorded in the slot state
  codeb.backup.env_backup:
    project: worb
    state: restored
    version: "2026-01-06T15:20:00"
    dest: /srv/worb/shared/.env
'''

RETURN = r'''
project:
  description: The project.
  returned: always
  type: str
  sample: worb
environment:
  description: The environment.
  returned: always
  type: str
  sample: production
version:
  description:
    - I(state=present) the version now current (the new one, or the unchanged current one; null in
      check mode when a new one would be made).
    - I(state=restored) the timestamp of the version restored.
  returned: success
  type: str
  sample: "2026-01-07T10:30:00"
file:
  description: The version's file name in the store.
  returned: success
  type: str
  sample: "2026-01-07T10:30:00.env"
created:
  description: Whether a new version was (or in check mode would be) recorded.
  returned: state=present
  type: bool
master_created:
  description: Whether this was the first version, also written as C(master.env).
  returned: state=present
  type: bool
trigger:
  description: The trigger logged.
  returned: state=present
  type: str
  sample: deploy
sha256:
  description: sha256 of the version's bytes.
  returned: success
  type: str
size_bytes:
  description: Size of the version in bytes.
  returned: success
  type: int
  sample: 1432
duration_seconds:
  description: How long the run took.
  returned: success
  type: float
  sample: 0.012
keys_added:
  description: Names of keys added (against the current version, or against I(dest) when restoring).
  returned: success
  type: list
  elements: str
  sample: [NEW_FLAG]
keys_removed:
  description: Names of keys removed.
  returned: success
  type: list
  elements: str
keys_changed:
  description: Names of keys whose value changed. Values are never returned.
  returned: success
  type: list
  elements: str
  sample: [SMTP_PASSWORD]
invalid_lines:
  description: Line numbers the parser did not understand; they are stored verbatim.
  returned: state=present
  type: list
  elements: int
repaired:
  description: What this run repaired after an earlier run was killed (uncommitted files removed,
    a stale C(current.env) rewritten).
  returned: success
  type: list
  elements: str
live_saved:
  description: Whether the live content of I(dest) was (in check mode, would be) recorded as a
    version before I(dest) was overwritten, because it was in no version yet.
  returned: state=restored, or values with dest
  type: bool
live_version:
  description: The version the live content of I(dest) was saved as (null when it was not saved,
    and in check mode).
  returned: state=restored, or values with dest
  type: str
restored:
  description: With I(values) and I(dest), what was written to I(dest).
  returned: values with dest
  type: dict
  contains:
    dest:
      description: The file written.
      type: str
    changed:
      description: Whether I(dest) changed (content, mode or owner).
      type: bool
    content_changed:
      description: Whether the content of I(dest) changed.
      type: bool
    version:
      description: The version written.
      type: str
    sha256:
      description: sha256 of the content written.
      type: str
    size_bytes:
      description: Size of the content written.
      type: int
    mode:
      description: Mode of I(dest).
      type: str
    dest_sha256_before:
      description: sha256 of I(dest) before (null if it did not exist).
      type: str
store_path:
  description: The store directory of this project/environment.
  returned: state=present
  type: str
dest:
  description: The file written.
  returned: state=restored
  type: str
requested_version:
  description: The I(version) as given (C(master), C(current) or a timestamp).
  returned: state=restored
  type: str
content_changed:
  description: Whether the content of I(dest) changed (C(changed) is also true for a mode or owner change).
  returned: state=restored
  type: bool
dest_sha256_before:
  description: sha256 of I(dest) before the restore (null if it did not exist).
  returned: state=restored
  type: str
mode:
  description: Mode of I(dest).
  returned: state=restored
  type: str
  sample: "0600"
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.codeb.backup.plugins.module_utils import env_store
from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error
from ansible_collections.codeb.backup.plugins.module_utils.metrics import DEFAULT_TEXTFILE_DIR


def main():
    module = AnsibleModule(
        argument_spec=dict(
            project=dict(type='str', required=True),
            environment=dict(type='str', default=env_store.DEFAULT_ENVIRONMENT),
            root=dict(type='path', default=env_store.DEFAULT_ROOT),
            state=dict(type='str', default='present', choices=['present', 'restored']),
            src=dict(type='path'),
            content=dict(type='str', no_log=True),
            values=dict(type='dict', no_log=True),
            trigger=dict(type='str', choices=list(env_store.TRIGGERS)),
            version=dict(type='str', default='current'),
            dest=dict(type='path'),
            owner=dict(type='str'),
            group=dict(type='str'),
            mode=dict(type='raw', default='0600'),
            lock_timeout=dict(type='float', default=60.0),
            metrics_dir=dict(type='path', default=DEFAULT_TEXTFILE_DIR),
        ),
        mutually_exclusive=[('src', 'content', 'values')],
        required_if=[
            ('state', 'present', ('src', 'content', 'values'), True),
            ('state', 'restored', ('dest',)),
        ],
        supports_check_mode=True,
    )
    p = module.params
    if p['state'] == 'present' and p['dest'] and p['values'] is None:
        module.fail_json(msg='dest with state=present needs values (the keys to set in it); to '
                             'back the file up give src, to write a version use state=restored',
                         param='dest')
    try:
        if p['state'] == 'present' and p['dest']:
            result = env_store.set_values(
                p['root'], p['project'], p['environment'], values=p['values'], dest=p['dest'],
                owner=p['owner'], group=p['group'], mode=p['mode'],
                check_mode=module.check_mode, lock_timeout=p['lock_timeout'],
                metrics_dir=p['metrics_dir'])
        elif p['state'] == 'present':
            result = env_store.backup(
                p['root'], p['project'], p['environment'], src=p['src'], content=p['content'],
                values=p['values'], trigger=p['trigger'], check_mode=module.check_mode,
                lock_timeout=p['lock_timeout'], metrics_dir=p['metrics_dir'])
        else:
            result = env_store.restore(
                p['root'], p['project'], p['environment'], version=p['version'], dest=p['dest'],
                owner=p['owner'], group=p['group'], mode=p['mode'],
                check_mode=module.check_mode, lock_timeout=p['lock_timeout'],
                metrics_dir=p['metrics_dir'])
    except Exception as exc:  # every failure, whatever its type, as a result naming what failed
        module.fail_json(**as_backup_error(exc, 'env_backup').as_result())
    diff = result.pop('diff', None)
    if module._diff and result['changed'] and diff:
        result['diff'] = diff
    module.exit_json(**result)


if __name__ == '__main__':
    main()
