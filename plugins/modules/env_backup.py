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
  - O(state=present) records O(src) or O(content) as a new version when it differs from the
    current one (otherwise nothing changes and C(changed=false)), or applies O(values) to the
    current version (what C(codeb-backup env set) does), keeping comments, order and
    quoting of every other line byte for byte.
  - Every version is logged in C(backup-log.json) with its time, O(trigger), sha256 and the
    B(names) of the keys added, removed and changed. Values are never logged or returned.
  - O(state=restored) writes O(version) (C(master), C(current) or a timestamp) to O(dest)
    atomically (temporary file, fsync, rename) with O(mode), O(owner) and O(group), after
    checking the version's sha256. An unknown version fails with the list of available ones.
  - Before O(dest) is overwritten (O(state=restored), or O(values) with O(dest)), its live
    content is recorded as a version when it is in no version yet (someone edited the file
    by hand since the last backup), so nothing the app ran is ever lost.
  - With O(values) and O(dest), the keys are set in the live file's content (saved first as
    above), the result is recorded as a version and written to O(dest); this is the
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
  state:
    description:
      - C(present) records a version (from O(src), O(content) or O(values)).
      - C(restored) writes a version to O(dest).
    type: str
    choices: [present, restored]
    default: present
  src:
    description:
      - Path on the managed host of the C(.env) file to back up (O(state=present)).
      - Exactly one of O(src), O(content) and O(values) is required with O(state=present).
    type: path
  content:
    description:
      - The C(.env) text to record (O(state=present)). Never logged.
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
      - Defaults to C(set) with O(values), otherwise C(manual).
    type: str
    choices: [set, deploy, daily, manual]
  version:
    description:
      - With O(state=restored), the version to restore. C(master), C(current) or a UTC timestamp
        C(YYYY-MM-DDTHH:MM:SS) (a trailing C(.env) is accepted, as in the slot state's C(envBackup)).
    type: str
    default: current
  dest:
    description:
      - With O(state=restored), the app's C(.env) file to write (absolute path; its directory
        must exist). A symlink is followed and its target replaced.
      - With O(state=present) and O(values), the app's C(.env) file whose live content the keys
        are set in and which receives the result. Not allowed with O(src) or O(content).
    type: path
  owner:
    description:
      - Owner of O(dest) (name or uid). Default keeps the owner of an existing O(dest).
      - Used whenever O(dest) is written.
    type: str
  group:
    description:
      - Group of O(dest) (name or gid). Default keeps the group of an existing O(dest).
    type: str
  mode:
    description:
      - Permissions of O(dest), an octal string such as C("0600").
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
  - A live O(dest) whose content is in no version is recorded (trigger C(manual) for a restore,
    C(set) for O(values)) before it is overwritten; C(live_saved) says so.
seealso:
  - module: codeb.backup.env_backup_info
extends_documentation_fragment:
  - codeb.backup.env
  - ansible.builtin.action_common_attributes
  - codeb.backup.attributes
attributes:
  check_mode:
    details: Reads the store and O(dest) only; predicts the version, the keys that change and C(changed).
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

- name: Set two keys (`codeb-backup env set` from a playbook), recorded as a new version
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
msg:
  description: In check mode, what the real run would do (key names only, never values).
  returned: in check mode
  type: str
  sample: would record a new version of worb/production
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
    - O(state=present) the version now current (the new one, or the unchanged current one; null in
      check mode when a new one would be made).
    - O(state=restored) the timestamp of the version restored.
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
  description: Names of keys added (against the current version, or against O(dest) when restoring).
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
  description: Whether the live content of O(dest) was (in check mode, would be) recorded as a
    version before O(dest) was overwritten, because it was in no version yet.
  returned: state=restored, or values with dest
  type: bool
live_version:
  description: The version the live content of O(dest) was saved as (null when it was not saved,
    and in check mode).
  returned: state=restored, or values with dest
  type: str
restored:
  description: With O(values) and O(dest), what was written to O(dest).
  returned: values with dest
  type: dict
  contains:
    dest:
      description: The file written.
      type: str
    changed:
      description: Whether O(dest) changed (content, mode or owner).
      type: bool
    content_changed:
      description: Whether the content of O(dest) changed.
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
      description: Mode of O(dest).
      type: str
    dest_sha256_before:
      description: sha256 of O(dest) before (null if it did not exist).
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
  description: The O(version) as given (C(master), C(current) or a timestamp).
  returned: state=restored
  type: str
content_changed:
  description: Whether the content of O(dest) changed (C(changed) is also true for a mode or owner change).
  returned: state=restored
  type: bool
dest_sha256_before:
  description: sha256 of O(dest) before the restore (null if it did not exist).
  returned: state=restored
  type: str
mode:
  description: Mode of O(dest).
  returned: state=restored
  type: str
  sample: "0600"
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.codeb.backup.plugins.module_utils.env import jobs
from ansible_collections.codeb.backup.plugins.module_utils.env.options import BACKUP_MODULE
from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error
from ansible_collections.codeb.backup.plugins.module_utils.spec import argument_spec

_STORE = ('root', 'project', 'environment', 'check_mode', 'lock_timeout', 'metrics_dir')
_DEST = ('dest', 'owner', 'group', 'mode')


def _run(p, check_mode):
    """The core entry point for these parameters (each takes only what it uses)."""
    params = dict(p, check_mode=check_mode)
    common = dict((name, params[name]) for name in _STORE)
    dest = dict((name, params[name]) for name in _DEST)
    if p['state'] == 'restored':
        return jobs.restore(version=p['version'], **dict(common, **dest))
    if p['dest']:
        return jobs.set_values(values=p['values'], **dict(common, **dest))
    return jobs.backup(src=p['src'], content=p['content'], values=p['values'],
                       trigger=p['trigger'], **common)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(BACKUP_MODULE),
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
        result = _run(p, module.check_mode)
    except Exception as exc:  # every failure, whatever its type, as a result naming what failed
        module.fail_json(**as_backup_error(exc, 'env_backup').as_result())
    diff = result.pop('diff', None)
    if module._diff and result['changed'] and diff:
        result['diff'] = diff
    if module.check_mode:
        result['msg'] = _prediction(p, result)
    module.exit_json(**result)


def _prediction(p, result):
    """What the real run would do, in words (check mode). Key names only, never values."""
    where = '%s/%s' % (p['project'], p['environment'])
    if not result['changed']:
        return 'nothing to do for %s: a real run would write nothing' % where
    if p['state'] == 'restored':
        return 'would write version %s of %s to %s' % (result.get('version'), where, p['dest'])
    if p['values'] is not None:
        keys = ', '.join(sorted(p['values']))
        if p['dest']:
            return 'would set %s in %s and record it as a version of %s' % (keys, p['dest'], where)
        return 'would set %s in a new version of %s' % (keys, where)
    return 'would record a new version of %s' % where


if __name__ == '__main__':
    main()
