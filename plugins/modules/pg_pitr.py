#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pg_pitr
short_description: Point-in-time recovery of PostgreSQL from a pgBackRest repository
version_added: "1.0.0"
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
    O(scratch_user), with archiving off, for inspection. Production is untouched.
  - O(state=archived) runs on the PostgreSQL host and only makes everything committed so far
    reachable by PITR (marker commit, WAL switch, wait for the archiver). Its
    RV(archived_until) is the end of the recovery window; pass it to a scratch restore.
  - Check mode validates the target, the stanza and the window and reports the plan;
    it stops nothing, restores nothing and writes no WAL.
  - On a host that was never set up for pgBackRest (no C(pgbackrest), or no O(pg_user) /
    O(scratch_user) OS user) the module fails before touching anything, naming that option
    and telling to run C(playbooks/setup-backup.yml) first.
  - The host command C(codeb-backup pgbackrest-window) prints the same window from cron or a shell.
author:
  - codeb.backup maintainers (@codeb)
requirements:
  - pgBackRest configured for O(stanza) (role C(codeb.backup.postgresql_backup))
  - PostgreSQL 15 server binaries
options:
  state:
    description:
      - V(restored) performs the recovery; V(archived) only flushes the WAL to the archive.
    type: str
    choices: [restored, archived]
    default: restored
  stanza:
    description: pgBackRest stanza to recover from.
    type: str
    default: codeb
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
  pg_data:
    description: Data directory of the cluster restored in place.
    type: path
    default: /var/lib/postgresql/15/main
  pg_bin:
    description: Directory of the PostgreSQL 15 binaries (psql, pg_ctl, pg_isready).
    type: path
    default: /usr/lib/postgresql/15/bin
  pg_service:
    description: systemd unit of the cluster restored in place.
    type: str
    default: postgresql@15-main
  pg_log:
    description: Server log of the cluster restored in place, read to report where recovery stopped.
    type: path
    default: /var/log/postgresql/postgresql-15-main.log
  pg_user:
    description: OS user PostgreSQL runs as (and pgBackRest runs as for an in-place restore).
    type: str
    default: postgres
  login_user:
    description: Database role used to check the server (local socket).
    type: str
    default: postgres
  login_port:
    description: Port of the cluster restored in place.
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
  scratch_user:
    description: OS user that owns the repository and runs the scratch cluster.
    type: str
    default: pgbackrest
  config:
    description: pgBackRest configuration file (default pgBackRest's own).
    type: path
  timeout:
    description: Seconds to wait for the restore, the archiver and the end of recovery.
    type: int
    default: 600
  lock_timeout:
    description: Seconds a second concurrent recovery of the same stanza waits before failing.
    type: float
    default: 60
  metrics_dir:
    description: node_exporter textfile directory for the job metrics (kind C(pitr_restore)); empty disables.
    type: path
    default: /var/lib/prometheus/node-exporter
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
    details: Validates target, stanza and recovery window; stops, restores and flushes nothing.
  diff_mode:
    support: none
notes:
  - An in-place recovery discards every transaction after O(target_time) from the live
    cluster. Try the target with O(restore_to=scratch) first.
seealso:
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
'''

RETURN = r'''
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
size_bytes:
  description: Size of the restored data directory.
  returned: always
  type: int
  sample: 123927995
duration_seconds:
  description: Wall time of the run.
  returned: always
  type: float
  sample: 11.3
'''

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.codeb.backup.plugins.module_utils import pgbackrest as core
from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', default='restored', choices=['restored', 'archived']),
            stanza=dict(type='str', default='codeb'),
            target=dict(type='str', choices=list(core.TARGETS)),
            target_time=dict(type='str'),
            restore_to=dict(type='str', default='in_place', choices=list(core.RESTORE_TO)),
            archived_until=dict(type='str'),
            pg_data=dict(type='path', default=core.DEFAULT_PG_DATA),
            pg_bin=dict(type='path', default=core.DEFAULT_PG_BIN),
            pg_service=dict(type='str', default=core.DEFAULT_PG_SERVICE),
            pg_log=dict(type='path', default=core.DEFAULT_PG_LOG),
            pg_user=dict(type='str', default=core.DEFAULT_PG_USER),
            login_user=dict(type='str', default='postgres'),
            login_port=dict(type='int', default=5432),
            login_unix_socket=dict(type='path', default=core.DEFAULT_SOCKET),
            scratch_path=dict(type='path'),
            scratch_port=dict(type='int', default=core.DEFAULT_SCRATCH_PORT),
            scratch_user=dict(type='str', default=core.DEFAULT_REPO_USER),
            config=dict(type='path'),
            timeout=dict(type='int', default=600),
            lock_timeout=dict(type='float', default=60.0),
            metrics_dir=dict(type='path', default='/var/lib/prometheus/node-exporter'),
        ),
        supports_check_mode=True,
    )
    p = module.params
    started = time.monotonic()
    try:
        core.naming.validate_name('stanza', p['stanza'])
        if p['state'] == 'archived':
            if module.check_mode:
                module.exit_json(changed=True, stanza=p['stanza'], size_bytes=0,
                                 duration_seconds=0.0)
            until, segment = core.flush_archive(
                port=p['login_port'], socket=p['login_unix_socket'], run_as=p['pg_user'],
                pg_bin=p['pg_bin'], timeout=p['timeout'], login_user=p['login_user'])
            module.exit_json(changed=True, stanza=p['stanza'], archived_until=core.format_time(until),
                             segment=segment, size_bytes=0,
                             duration_seconds=round(time.monotonic() - started, 3))
        result = core.restore(
            p['stanza'], target=p['target'], target_time=p['target_time'],
            restore_to=p['restore_to'], check_mode=module.check_mode, pg_data=p['pg_data'],
            pg_bin=p['pg_bin'], pg_port=p['login_port'], pg_socket=p['login_unix_socket'],
            pg_service=p['pg_service'], pg_log=p['pg_log'], pg_user=p['pg_user'],
            scratch_path=p['scratch_path'], scratch_port=p['scratch_port'],
            scratch_user=p['scratch_user'], config=p['config'],
            archived_until=p['archived_until'], timeout=p['timeout'],
            metrics_dir=p['metrics_dir'] or None, lock_timeout=p['lock_timeout'],
            login_user=p['login_user'])
    except Exception as exc:  # every failure, whatever its type, as a result naming what failed
        module.fail_json(**as_backup_error(exc, 'pg_pitr').as_result())
    module.exit_json(**result)


if __name__ == '__main__':
    main()
