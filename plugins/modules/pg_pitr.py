#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pg_pitr
short_description: pgBackRest stanza, backups and point-in-time recovery of PostgreSQL
version_added: "0.1.0"
description:
  - O(state=restored) recovers a PostgreSQL 15 cluster to O(target_time) (or the end of the
    archive with O(target=latest), or the end of the backup with O(target=immediate)) from
    the pgBackRest repository of O(stanza).
  - Everything is validated before anything is touched. A malformed O(target_time), an
    unknown O(stanza), or a time outside the recovery window is refused with a message
    naming the parameter; for the window the message gives the earliest and latest points
    available (from C(pgbackrest info --output=json)).
  - O(restore_to=in_place) runs on the PostgreSQL host. While the server still runs, it
    commits a marker transaction, switches the WAL segment and waits until it is archived,
    so every commit up to now is reachable. It then stops O(pg_service), runs a pgBackRest
    C(--delta) restore with C(--type=time --target-action=promote), starts the service, waits
    for the end of recovery and reports where recovery stopped and the new timeline.
    Archiving continues on the new timeline; the old timeline stays in the repository.
  - O(restore_to=scratch) runs on the repository (backup) host. It restores into
    O(scratch_path) and starts a separate, local-only cluster on O(scratch_port) owned by
    O(repo_user), with archiving off, for inspection. Production is untouched.
  - O(state=archived) runs on the PostgreSQL host and only makes everything committed so far
    reachable by PITR (marker commit, WAL switch, wait for the archiver). Its
    RV(archived_until) is the end of the recovery window; pass it to a scratch restore.
  - O(state=stanza) runs on the repository host. It creates O(stanza) with
    C(pgbackrest stanza-create) only when the repository does not have it (RV(created)), then
    runs C(pgbackrest check), which fails the task unless archiving and backups work end to
    end. C(changed) is true only when the stanza was created.
  - O(state=backup) runs on the repository host and takes a O(backup_type) backup, serialised
    with every other backup of the stanza by a lock, and writes its metrics (kind
    C(pgbackrest_full), C(pgbackrest_diff) or C(pgbackrest_incr)). With O(if_none=true) it
    backs up only when the stanza has no backup yet.
  - M(codeb.backup.pg_pitr_info) reads the backups, the recovery window and the backup a
    streaming standby is seeded from.
  - Check mode validates and reports the plan; it stops nothing, restores nothing, creates no
    stanza, takes no backup and writes no WAL (C(pgbackrest check) writes WAL, so check mode
    skips it and says it would run it).
  - On a host that was never set up for pgBackRest (no C(pgbackrest), or no O(os_user) /
    O(repo_user) OS user) the module fails before touching anything, naming that option
    and telling to run C(playbooks/setup-backup.yml) first. In check mode O(state=stanza) and
    O(state=backup) predict a change there instead (a first setup run in check mode).
  - The host commands C(codeb-backup pgbackrest-backup) and C(codeb-backup pgbackrest-window)
    take the same options as flags (O(backup_type) as C(--type), O(repo_user) also as
    C(--run-as)).
author:
  - codeb.backup maintainers (@codeb)
requirements:
  - PostgreSQL 15 server binaries
options:
  state:
    description:
      - V(restored) performs the recovery; V(archived) only flushes the WAL to the archive.
      - V(stanza) creates the stanza if it is missing and checks it; V(backup) takes a backup.
    type: str
    choices: [restored, archived, stanza, backup]
    default: restored
  target:
    description:
      - V(time) recovers to O(target_time) (the default when O(target_time) is set).
      - V(latest) replays all archived WAL. V(immediate) stops as soon as the backup is consistent.
    type: str
    choices: [time, latest, immediate]
  target_time:
    description:
      - Point to recover to, C(YYYY-MM-DD HH:MM:SS) in UTC, optionally with a C(.ffffff)
        fraction and a zone such as C(+09:00). Every transaction committed at or before this
        time is kept; every later one is discarded.
    type: str
  restore_to:
    description: Recover the production cluster in place, or a scratch copy on this host.
    type: str
    choices: [in_place, scratch]
    default: in_place
  archived_until:
    description:
      - End of the recovery window from a previous O(state=archived) run (its RV(archived_until)).
        Without it, a scratch restore takes the window's end to be now.
    type: str
  backup_type:
    description: Kind of backup O(state=backup) takes.
    type: str
    choices: [full, diff, incr]
    default: incr
  if_none:
    description: With O(state=backup), back up only when the stanza has no backup yet.
    type: bool
    default: false
  pg_data:
    description: Data directory of the cluster restored in place.
    type: path
    default: /var/lib/postgresql/15/main
  pg_bin_dir:
    description: Directory of the PostgreSQL 15 binaries (psql, pg_ctl, pg_isready).
    type: path
    default: /usr/lib/postgresql/15/bin
    aliases: [pg_bin]
  pg_service:
    description: systemd unit of the cluster restored in place.
    type: str
    default: postgresql@15-main
  pg_log:
    description: Server log of the cluster restored in place, read to report where recovery stopped.
    type: path
    default: /var/log/postgresql/postgresql-15-main.log
  os_user:
    description: OS user PostgreSQL runs as (and pgBackRest runs as for an in-place restore).
    type: str
    default: postgres
    aliases: [pg_user]
  login_user:
    description: Database role used to check the server (local socket).
    type: str
    default: postgres
  login_port:
    description: Port of the cluster restored in place (and flushed by O(state=archived)).
    type: int
    default: 5432
  login_unix_socket:
    description: Unix socket directory of the cluster restored in place.
    type: path
    default: /var/run/postgresql
  scratch_path:
    description:
      - Data directory of the scratch cluster (replaced on every scratch restore; a directory
        not made by a scratch restore is refused). Default C(/opt/codeb/pitr-scratch/{stanza}).
    type: path
  scratch_port:
    description: Port of the scratch cluster (it listens on its unix socket in O(scratch_path) only).
    type: int
    default: 5499
  timeout:
    description: Seconds to wait for the restore, the archiver and the end of recovery.
    type: int
    default: 600
  lock_timeout:
    description:
      - Seconds a second concurrent run on the same stanza waits before failing. Unset, a
        recovery waits 60 s and a backup 1800 s.
    type: float
  metrics_dir:
    description:
      - node_exporter textfile directory for the job metrics (kinds C(pitr_restore) and
        C(pgbackrest_full), C(pgbackrest_diff), C(pgbackrest_incr)); empty disables.
    type: path
    default: /var/lib/prometheus/node-exporter
extends_documentation_fragment:
  - codeb.backup.pgbackrest
  - ansible.builtin.action_common_attributes
  - codeb.backup.attributes
attributes:
  check_mode:
    details:
      - Validates target, stanza and recovery window; stops, restores and flushes nothing.
      - Creates no stanza, takes no backup and does not run C(pgbackrest check).
  diff_mode:
    support: none
notes:
  - An in-place recovery discards every transaction after O(target_time) from the live
    cluster. Try the target with O(restore_to=scratch) first.
seealso:
  - module: codeb.backup.pg_pitr_info
  - name: pgBackRest user guide, point-in-time recovery
    description: How pgBackRest restores to a time target.
    link: https://pgbackrest.org/user-guide.html#pitr
'''

EXAMPLES = r'''
- name: See what a recovery to 10:30 UTC would do (nothing is touched)
  codeb.backup.pg_pitr:
    stanza: codeb
    target_time: "2026-01-07 10:30:00"
    restore_to: in_place
  check_mode: true

- name: Recover production to 10:30 UTC in place
  codeb.backup.pg_pitr:
    stanza: codeb
    target_time: "2026-01-07 10:30:00"
    restore_to: in_place

- name: Make everything committed so far reachable (on the PostgreSQL host)
  codeb.backup.pg_pitr:
    state: archived
  register: flushed

- name: Inspect the database as it was at 10:30 in a scratch cluster (on the backup host)
  codeb.backup.pg_pitr:
    target_time: "2026-01-07 10:30:00"
    restore_to: scratch
    archived_until: "{{ flushed.archived_until }}"
  delegate_to: backup1

- name: Create the stanza if it is missing and check archiving end to end (backup host)
  codeb.backup.pg_pitr:
    state: stanza
    stanza: codeb
    repo_user: pgbackrest

- name: Take the first full backup unless the stanza has one
  codeb.backup.pg_pitr:
    state: backup
    backup_type: full
    if_none: true
'''

RETURN = r'''
stanza:
  description: The stanza acted on.
  returned: always
  type: str
  sample: codeb
msg:
  description: What was done, or with check mode what would be done.
  returned: state=stanza, and state=backup when no backup was taken
  type: str
  sample: stanza codeb exists; check passed
target:
  description: Recovery target type used.
  returned: state=restored
  type: str
  sample: time
target_time:
  description: The target as given to PostgreSQL (UTC).
  returned: state=restored and target=time
  type: str
  sample: "2026-01-07 10:30:00+00"
window:
  description: The recovery window the target was checked against.
  returned: state=restored
  type: dict
  sample: {"earliest": "2026-01-01 01:00:07+00", "latest": "2026-01-07 11:02:03.123456+00"}
recovery_stopped_at:
  description: Commit time of the first transaction recovery did not apply, as the server logged it.
  returned: when recovery stopped at a time target
  type: str
  sample: "2026-01-07 10:30:00.51234+00"
last_replayed_commit:
  description: Commit time of the last transaction replayed, as the server logged it.
  returned: state=restored, not in check mode
  type: str
  sample: "2026-01-07 10:29:59.98765+00"
timeline:
  description: Timeline the recovered cluster runs on after promotion.
  returned: state=restored, not in check mode
  type: int
  sample: 2
data_directory:
  description: Data directory that was restored.
  returned: state=restored
  type: str
  sample: /var/lib/postgresql/15/main
port:
  description: Port of the recovered cluster.
  returned: state=restored
  type: int
  sample: 5432
archived_until:
  description: Commit time of the marker transaction; every commit up to it is archived.
  returned: state=archived, not in check mode
  type: str
  sample: "2026-01-07 11:02:03.123456+00"
segment:
  description: WAL segment that was switched and archived.
  returned: state=archived, not in check mode
  type: str
  sample: "000000010000000000000042"
created:
  description: Whether the stanza was created (with check mode, would be created).
  returned: state=stanza
  type: bool
  sample: false
checked:
  description: Whether C(pgbackrest check) ran and passed (false in check mode).
  returned: state=stanza
  type: bool
  sample: true
type:
  description: Kind of the backup taken (or found, with O(if_none=true)).
  returned: state=backup
  type: str
  sample: full
label:
  description: pgBackRest label of the backup taken, or of the newest one with O(if_none=true).
  returned: state=backup, not in check mode
  type: str
  sample: 20260107-010002F
database_size_bytes:
  description: Size of the cluster the backup copied.
  returned: state=backup when a backup was taken
  type: int
  sample: 123927995
size_bytes:
  description: Size of the restored data directory, or what a backup added to the repository.
  returned: state=restored, state=archived, state=backup
  type: int
  sample: 123927995
duration_seconds:
  description: Wall time of the run.
  returned: state=restored, state=archived, state=backup
  type: float
  sample: 11.3
'''

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.codeb.backup.plugins.module_utils import naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error
from ansible_collections.codeb.backup.plugins.module_utils.postgres import pgbackrest, pitr
from ansible_collections.codeb.backup.plugins.module_utils.spec import argument_spec

_RESTORE_PARAMS = ('target', 'target_time', 'restore_to', 'pg_data', 'pg_bin_dir',
                   'login_port', 'login_unix_socket', 'pg_service', 'pg_log', 'os_user',
                   'scratch_path', 'scratch_port', 'repo_user', 'config', 'archived_until',
                   'timeout', 'login_user')


def _archived(p, check_mode):
    started = time.monotonic()
    if check_mode:
        return dict(changed=True, stanza=p['stanza'], size_bytes=0, duration_seconds=0.0,
                    msg='would switch the WAL segment and wait until it is archived')
    until, segment = pitr.flush_archive(
        port=p['login_port'], socket=p['login_unix_socket'], run_as=p['os_user'],
        pg_bin=p['pg_bin_dir'], timeout=p['timeout'], login_user=p['login_user'])
    return dict(changed=True, stanza=p['stanza'], archived_until=pgbackrest.format_time(until),
                segment=segment, size_bytes=0,
                duration_seconds=round(time.monotonic() - started, 3))


def _run(p, check_mode):
    state = p['state']
    metrics_dir = p['metrics_dir'] or None
    if state == 'archived':
        return _archived(p, check_mode)
    if state == 'stanza':
        return pgbackrest.ensure_stanza(p['stanza'], p['repo_user'], p['config'], check_mode)
    if state == 'backup':
        return pgbackrest.backup(
            p['stanza'], p['backup_type'], repo_user=p['repo_user'], config=p['config'],
            if_none=p['if_none'], metrics_dir=metrics_dir, check_mode=check_mode,
            lock_timeout=pgbackrest.BACKUP_LOCK_TIMEOUT if p['lock_timeout'] is None
            else p['lock_timeout'])
    return pitr.restore(
        p['stanza'], check_mode=check_mode, metrics_dir=metrics_dir,
        lock_timeout=pgbackrest.RESTORE_LOCK_TIMEOUT if p['lock_timeout'] is None
        else p['lock_timeout'],
        **dict((name, p[name]) for name in _RESTORE_PARAMS))


def main():
    module = AnsibleModule(argument_spec=argument_spec(pgbackrest.options(pgbackrest.PITR_OPTIONS)),
                           supports_check_mode=True)
    try:
        naming.validate_name('stanza', module.params['stanza'])
        result = _run(module.params, module.check_mode)
    except Exception as exc:  # every failure, whatever its type, as a result naming what failed
        module.fail_json(**as_backup_error(exc, 'pg_pitr').as_result())
    module.exit_json(**result)


if __name__ == '__main__':
    main()
