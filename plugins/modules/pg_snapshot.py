#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pg_snapshot
short_description: Verified per-database PostgreSQL snapshots with safe restore and retention
version_added: "0.1.0"
description:
  - Snapshots one PostgreSQL database with C(pg_dump) to
    C({backup_dir}/{database}-{YYYY-MM-DDTHH:MM:SS}.dump) (UTC), or C(.dump.zst) when
    compressed with zstd. The file is written under a temporary name, checked with
    C(pg_restore --list), fsynced and renamed, and only then recorded in
    C({backup_dir}/manifest.json) with its sha256, size, duration, server version and the
    exact row count of every table (counted in the same MVCC snapshot C(pg_dump) used).
  - O(state=verified) re-checks snapshots (sha256 and C(pg_restore --list)) and fails if one
    is damaged, marking it C(failed_verification) in the manifest. Only evidence against the
    snapshot marks it; a missing tool or an unreadable disk fails the run and changes no
    snapshot's status.
  - Every run that is not in check mode first repairs what a killed run of the same database
    left, under its lock, and returns it as RV(reconciled). After an interrupted restore it
    reopens the database and drops the restore's temporary databases; it removes
    temporaries, finishes an interrupted prune, adopts a whole snapshot the manifest does not list and removes an unlisted one
    that fails its check.
  - O(state=restored) verifies the snapshot first and refuses a checksum mismatch, restores
    into a fresh temporary database, compares the row counts with the manifest, and only then
    swaps it in by renaming. A failed restore leaves the live database exactly as it was.
  - O(state=pruned) (also applied after every O(state=present)) deletes snapshots older than
    O(keep_days) but never the newest O(keep_min) good ones, even when backups stopped weeks
    ago; before it deletes anything it re-checks the sha256 of the snapshots it counts as
    those good ones. Manifest entries and files go together.
  - A lock per database makes a second concurrent run wait O(lock_timeout) seconds, then
    fail with a clear message. Every run writes node_exporter textfile metrics.
  - The same code runs from cron as C(codeb-backup pg-snapshot) on the host.
author:
  - codeb.backup maintainers (@codeb)
requirements:
  - C(zstd) on the managed host for O(compression=zstd).
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - codeb.backup.attributes
  - codeb.backup.postgres
attributes:
  check_mode:
    details: Connects and reads only; predicts the snapshot name, deletions, restores and
      verification outcomes (C(changed) when the manifest would be rewritten).
  diff_mode:
    support: none
options:
  state:
    description:
      - V(present) makes a new snapshot, then prunes.
      - V(verified) re-checks the O(snapshot) (latest by default, V(all) for every one).
      - V(restored) restores O(snapshot) (latest good by default) into O(target_database).
      - V(pruned) applies O(keep_days) and O(keep_min) only.
    type: str
    choices: [present, verified, restored, pruned]
    default: present
  database:
    description:
      - Database to snapshot; also the database whose snapshots are verified, restored or
        pruned. Letters, digits, C(_), C(-) and C(.), starting with a letter or digit.
    type: str
    required: true
    aliases: [db, name]
  target_database:
    description:
      - Database to restore into with O(state=restored). Defaults to O(database). It is
        replaced as a whole (created if absent); its encoding, collation and owner are kept.
      - V(template0) and V(template1) are always refused, V(postgres) unless
        O(allow_postgres_database=true); nothing is changed then.
    type: str
  allow_postgres_database:
    description:
      - Allow O(state=restored) to replace the V(postgres) database. It must then not be the
        O(maintenance_db).
    type: bool
    default: false
  purpose:
    description:
      - V(scheduled) snapshots report metrics as C(kind="pg_snapshot"); V(safety) snapshots
        (taken by deploy and rollback) as C(kind="pg_snapshot_safety"), so they never mask a
        failing scheduled job of the same database. Recorded in the manifest entry.
    type: str
    choices: [safety, scheduled]
    default: scheduled
  snapshot:
    description:
      - Which snapshot O(state=verified) or O(state=restored) acts on. V(latest) (the
        default) is the newest one, for restore the newest good one. Or a file name such as
        V(worb-2026-01-07T03:00:00.dump.zst), or its timestamp V(2026-01-07T03:00:00).
      - V(all) verifies every snapshot of O(database).
    type: str
    default: latest
  backup_dir:
    description: Directory holding the snapshots and C(manifest.json). Created C(0700).
    type: path
    default: /opt/codeb/db-backup/postgresql
  format:
    description:
      - pg_dump archive format. V(custom) is one file; V(directory) is a directory and
        lets C(pg_dump) itself use O(jobs) workers (gzip or none only; not with an
        O(os_user) the module has to switch to, because pg_dump would write the files as
        that user).
    type: str
    choices: [custom, directory]
    default: custom
  compression:
    description:
      - V(zstd:N) (N 1-19) pipes an uncompressed custom archive through C(zstd -T0);
        V(gzip:N) (N 1-9) is pg_dump's own compression; V(none) writes it uncompressed.
      - The default V(zstd:1) was chosen by C(bench/pg_snapshot_bench.py), being the fastest
        candidate, and smaller than pg_dump's default gzip (see docs/benchmarks.md).
    type: str
    default: zstd:1
  jobs:
    description:
      - Parallel workers for C(pg_restore) (and for C(pg_dump) with O(format=directory)).
      - With more than 1, a zstd snapshot is first decompressed to a temporary file in
        O(backup_dir) (about 2.7 times its size), because C(pg_restore -j) needs a seekable
        file; with 1 it is streamed and needs no space.
      - The default 1 was as fast as 2 on the 2-core benchmark machine; try the number of
        cores on a bigger server.
    type: int
    default: 1
  keep_days:
    description: Snapshots older than this many days are pruned (subject to O(keep_min)).
    type: int
    default: 7
  keep_min:
    description: The newest this many good snapshots are never pruned, whatever their age.
    type: int
    default: 3
  lock_timeout:
    description: Seconds to wait for another run on the same database before failing.
    type: float
    default: 60
  metrics_dir:
    description:
      - node_exporter textfile collector directory for the job metrics
        (C(codeb_backup_last_success_timestamp_seconds{kind="pg_snapshot",target=...}) ...).
      - An empty string disables metrics.
    type: path
    default: /var/lib/prometheus/node-exporter
notes:
  - O(state=restored) always reports C(changed) when it restores (it replaces the database).
  - O(state=verified) reports C(changed) exactly when it rewrote the manifest, that is when
    a snapshot's recorded status changed (its C(verified_at) is the time that status was
    established); a verification that confirms the recorded status writes nothing, and its
    time is in the C(pg_snapshot_verify) metrics.
  - A snapshot is a logical copy at one moment; point-in-time recovery is pgBackRest's job
    (role C(codeb.backup.postgresql_backup)).
seealso:
  - module: codeb.backup.pg_snapshot_info
'''

EXAMPLES = r'''
- name: Snapshot the worb database (zstd, verified, pruned to 7 days / at least 3)
  codeb.backup.pg_snapshot:
    database: worb
    os_user: postgres

- name: Verify every snapshot of worb
  codeb.backup.pg_snapshot:
    database: worb
    state: verified
    snapshot: all
    os_user: postgres

- name: Restore the latest good snapshot of worb into worb (swap, live DB untouched on failure)
  codeb.backup.pg_snapshot:
    database: worb
    state: restored
    jobs: 2
    login_host: 127.0.0.1
    login_password: "{{ vault_pg_password }}"

- name: Restore a given snapshot into a scratch database for inspection
  codeb.backup.pg_snapshot:
    database: worb
    state: restored
    snapshot: "2026-01-07T03:00:00"
    target_database: worb_inspect
    os_user: postgres

- name: Apply retention only
  codeb.backup.pg_snapshot:
    database: worb
    state: pruned
    keep_days: 7
    keep_min: 3
'''

RETURN = r'''
database:
  description: The database acted on.
  returned: always
  type: str
  sample: worb
file:
  description: Snapshot file name (made, or restored from).
  returned: state is present or restored
  type: str
  sample: worb-2026-01-07T03:00:00.dump.zst
path:
  description: Full path of the snapshot made.
  returned: state is present
  type: str
  sample: /opt/codeb/db-backup/postgresql/worb-2026-01-07T03:00:00.dump.zst
sha256:
  description: sha256 of the snapshot (for a directory, of its sorted file hashes).
  returned: state is present or restored
  type: str
size_bytes:
  description: Size of the snapshot written, restored, verified or pruned, in bytes.
  returned: always
  type: int
duration_seconds:
  description: Wall time of the run.
  returned: always
  type: float
server_version:
  description: PostgreSQL server version.
  returned: state is present
  type: str
  sample: "15.8"
format:
  description: Archive format used.
  returned: state is present
  type: str
compression:
  description: Compression used, normalised (V(zstd:1), V(gzip:6), V(none)).
  returned: state is present
  type: str
tables:
  description: Row count per table, dumped (present) or restored (restored).
  returned: state is present or restored
  type: dict
  sample: {"public.orders": 1200}
large_objects:
  description: Number of large objects dumped or restored.
  returned: state is present or restored
  type: int
pruned:
  description:
    - The snapshots deleted by retention, one dict each, in every state that prunes. In
      check mode, what would be deleted.
  returned: state is present or pruned
  type: list
  elements: dict
  contains:
    file:
      description: Snapshot file name.
      type: str
      sample: worb-2025-12-24T03:00:00.dump.zst
    time:
      description: UTC time of the snapshot.
      type: str
      sample: "2025-12-24T03:00:00"
    reason:
      description: Why retention deleted it.
      type: str
      sample: older than 7 days
kept:
  description: Snapshot files kept by retention.
  returned: state is pruned
  type: list
snapshots:
  description: One report per verified snapshot (C(file), C(ok), C(sha256_ok), C(list_ok), C(error)).
  returned: state is verified
  type: list
  elements: dict
verified:
  description: Whether every checked snapshot passed.
  returned: state is verified
  type: bool
target_database:
  description: Database restored into.
  returned: state is restored
  type: str
replaced_existing:
  description: Whether an existing database was replaced by the restore.
  returned: state is restored
  type: bool
reconciled:
  description:
    - What this run repaired before it started (C(stale_temps_removed), C(reopened),
      C(leftover_databases_dropped), C(prune_finished), C(adopted), C(removed)); a list of
      those for O(state=restored).
  returned: state is present, restored or pruned (not in check mode)
  type: raw
failed_verification:
  description: Snapshots whose sha256 no longer matched when retention re-checked them.
  returned: state is present or pruned
  type: list
  elements: dict
row_check:
  description: V(ok), or why the row counts could not be compared (an adopted snapshot).
  returned: state is restored
  type: str
timings:
  description: Seconds spent verifying, in pg_restore, checking row counts and swapping.
  returned: state is restored
  type: dict
  sample: {"verify_seconds": 1.2, "pg_restore_seconds": 30.5, "row_check_seconds": 2.1, "swap_seconds": 0.4}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.codeb.backup.plugins.module_utils import spec
from ansible_collections.codeb.backup.plugins.module_utils.postgres import options
from ansible_collections.codeb.backup.plugins.module_utils.postgres.snapshot import run_state
from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error


def main():
    module = AnsibleModule(argument_spec=spec.argument_spec(options.MODULE_OPTIONS),
                           supports_check_mode=True)
    try:
        result = run_state(module.params, check_mode=module.check_mode)
    except Exception as exc:  # every failure, whatever its type, as a result naming what failed
        module.fail_json(**as_backup_error(exc, 'pg_snapshot').as_result())
    module.exit_json(**result)


if __name__ == '__main__':
    main()
