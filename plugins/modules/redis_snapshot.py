#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: redis_snapshot
short_description: Fresh, checked Redis 7 RDB and AOF snapshots and their restore
version_added: "0.1.0"
description:
  - O(state=present) asks Redis for C(BGSAVE SCHEDULE) and waits until a save that started
    after the request has finished with C(rdb_last_bgsave_status:ok) (C(INFO persistence),
    C(LASTSAVE)); it never copies a stale file the way C(BGSAVE; sleep 5; cp) does. The RDB
    is copied to C({backup_dir}/dump-{YYYY-MM-DDTHH:MM:SS}.rdb) (UTC) under a temporary name,
    checked with C(redis-check-rdb), fsynced and renamed.
  - With AOF on, the Redis 7 multi-part AOF (C(appendonlydir/) and its manifest) is copied as
    one consistent set while automatic rewrites are paused (C(auto-aof-rewrite-percentage 0),
    put back even on failure), checked with C(redis-check-aof), loaded into a scratch
    C(redis-server) to count its keys (O(verify_load)) and stored as
    C({backup_dir}/appendonly-{YYYY-MM-DDTHH:MM:SS}.aof.tar).
  - Each snapshot is recorded in C({backup_dir}/manifest.json) with sha256, size, key count and
    duration; C(current.rdb) and C(current.aof) point at the newest one. Retention keeps RDB
    snapshots O(rdb_max_age_hours) hours and the newest O(aof_keep) AOF snapshots, and never
    fewer than the newest O(keep_min) good RDB snapshots.
  - O(state=restored) verifies the snapshot (sha256 and the Redis check tool) before touching
    Redis, then stops Redis (O(service_name), O(stop_command), or C(SHUTDOWN NOSAVE)), moves the
    current data files aside into C({dir}/codeb-restore-aside-*), installs the snapshot, starts
    Redis and compares its key count with the manifest. Redis loads the AOF and ignores
    C(dump.rdb) when C(appendonly yes), so an RDB restored into such an instance is also
    installed as the base of a fresh multi-part AOF. A failed restore puts the previous files
    back and starts Redis again.
  - Shipping to the backup host is the host command's (C(codeb-backup redis-ship), or
    C(codeb-backup redis-snapshot --ship)); the backup host takes each snapshot in with
    C(codeb-backup receive), which verifies its sha256 on arrival.
  - O(state=verified) re-checks O(snapshot) (V(all) for every one) against the
    manifest (size, sha256) and with C(redis-check-rdb) / C(redis-check-aof). Only such
    evidence marks a snapshot C(failed_verification) (never restored as V(latest), shipped or
    counted towards O(keep_min)); a check that cannot run (tool missing, disk full) fails the
    task and changes no snapshot's status. A restore refused on such evidence marks it too.
    The manifest is rewritten (and C(changed) is true) only when a status changed.
  - A lock per O(backup_dir) makes a second concurrent run wait O(lock_timeout) seconds, then
    fail clearly. Under that lock every run first reconciles what a killed or out-of-space run
    left (temporaries, a scratch C(redis-server), C(auto-aof-rewrite-percentage) left at 0,
    a whole snapshot the manifest does not list yet, an interrupted retention).
  - Every snapshot, restore and verification writes node_exporter textfile metrics (kinds
    C(redis_rdb), C(redis_aof), C(redis_restore), C(redis_verify)); any failure sets
    C(last_status 0) and keeps the last success time.
  - The same code runs from cron as C(codeb-backup redis-snapshot) on the host.
author:
  - codeb.backup contributors (@codeb)
requirements:
  - Python C(redis) client on the managed host (Debian C(python3-redis)).
  - C(redis-check-rdb), C(redis-check-aof) and, for O(verify_load), C(redis-server) on the
    managed host (Debian C(redis-server) / C(redis-tools)).
  - Run it on the Redis host itself, as a user that can read the Redis data directory.
attributes:
  check_mode:
    details: Connects and reads only; predicts the files a snapshot would write, or checks the
      snapshot a restore would use (sha256). Nothing is written, not even metrics.
  diff_mode:
    support: none
options:
  state:
    description:
      - V(present) takes a new snapshot (RDB and/or AOF per O(formats)), then applies retention.
      - V(restored) restores O(snapshot) into the running instance.
      - V(verified) re-checks O(snapshot) and records the outcome in the manifest.
    type: str
    choices: [present, restored, verified]
    default: present
  formats:
    description:
      - What O(state=present) snapshots. V(aof) is skipped (reported in RV(skipped)) when the
        instance runs with C(appendonly no).
    type: list
    elements: str
    choices: [rdb, aof]
    default: [rdb, aof]
  instance:
    description:
      - Name of the instance, used as the metrics C(target) label. Letters, digits, C(_),
        C(-) and C(.), starting with a letter or digit.
    type: str
    default: redis
  snapshot:
    description:
      - For O(state=restored), V(latest), a snapshot file name (C(dump-2026-01-07T10:00:00.rdb))
        or its timestamp (C(2026-01-07T10:00:00)).
      - V(latest) and a bare timestamp mean the RDB snapshot unless O(snapshot_format=aof).
      - For O(state=verified) also V(all), every snapshot in the manifest (O(snapshot_format)
        restricts it to one kind).
    type: str
    default: latest
  service_name:
    description:
      - systemd unit that runs the instance (Debian C(redis-server)); O(state=restored) stops
        and starts it with C(systemctl).
    type: str
  stop_command:
    description:
      - Command (a list, run without a shell) that stops the instance, instead of
        O(service_name). Without both, C(SHUTDOWN NOSAVE) is sent.
    type: list
    elements: str
  start_command:
    description:
      - Command (a list, run without a shell) that starts the instance and returns (for
        example C(redis-server /etc/redis/redis.conf --daemonize yes)). Needed for
        O(state=restored) unless O(service_name) is set.
    type: list
    elements: str
  data_dir:
    description:
      - The Redis data directory as this host sees it, if not what C(CONFIG GET dir) says
        (for example Redis in a container). For O(state=restored) it also allows a restore
        while Redis is down.
    type: path
  appendonly:
    description:
      - For O(state=restored) while Redis is down, whether the instance starts with
        C(appendonly yes). Normally read from the running instance.
    type: bool
  verify_load:
    description:
      - Load each AOF snapshot into a scratch C(redis-server) on a private unix socket to prove
        it loads and count its keys. Needs memory for one more copy of the dataset.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for a save, an AOF rewrite, a stop or a start.
    type: float
    default: 600
  keep_min:
    description: Never delete the newest O(keep_min) good RDB snapshots, whatever their age.
    type: int
    default: 3
  rdb_max_age_hours:
    description: Delete RDB snapshots older than this many hours.
    type: int
    default: 24
  aof_keep:
    description: How many AOF snapshots to keep (the newest ones).
    type: int
    default: 1
  prune:
    description: Apply retention after O(state=present).
    type: bool
    default: true
  metrics_dir:
    description: node_exporter textfile directory for the job metrics; empty disables them.
    type: path
    default: /var/lib/prometheus/node-exporter
  lock_timeout:
    description: Seconds a second concurrent run waits for the first before failing.
    type: float
    default: 60
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - codeb.backup.attributes
  - codeb.backup.redis
  - codeb.backup.redis.store
seealso:
  - module: codeb.backup.redis_snapshot_info
  - module: codeb.backup.redis_persistence
  - module: community.general.redis
'''

EXAMPLES = r'''
- name: Hourly-style snapshot (RDB + AOF) into the backup root
  codeb.backup.redis_snapshot:
    login_password: "{{ redis_password }}"
  register: snap

- name: Only an RDB, from a password-protected instance on a socket, keep 48 h
  codeb.backup.redis_snapshot:
    login_unix_socket: /run/redis/redis-server.sock
    login_password: "{{ redis_password }}"
    formats: [rdb]
    rdb_max_age_hours: 48

- name: Restore the newest RDB snapshot into the systemd-managed instance
  codeb.backup.redis_snapshot:
    state: restored
    snapshot: latest
    service_name: redis-server

- name: Restore a given AOF snapshot
  codeb.backup.redis_snapshot:
    state: restored
    snapshot: appendonly-2026-01-07T10:00:00.aof.tar
    service_name: redis-server

- name: Re-check every snapshot (sha256, redis-check-rdb / redis-check-aof)
  codeb.backup.redis_snapshot:
    state: verified
    snapshot: all
'''

RETURN = r'''
msg:
  description: With O(state=restored) in check mode, what the real run would do.
  returned: state=restored in check mode
  type: str
  sample: would stop Redis instance redis and restore dump-2026-01-07T10:00:00.rdb (rdb, sha256 checked)
snapshots:
  description:
    - Manifest entries of the snapshots written (O(state=present)), or one report per
      snapshot checked (O(state=verified)) with C(file), C(ok), C(status) and C(error).
  returned: state=present or state=verified, not check mode
  type: list
  elements: dict
  sample:
    - file: dump-2026-01-07T10:00:00.rdb
      kind: rdb
      time: "2026-01-07T10:00:00"
      sha256: 63d8333310f657eaf40726843546f52540efcee621fe3e0aeec6f721bd6738a6
      size_bytes: 8873
      keys: 1001
      expires: 1
      lastsave: 1767780000
      bgsave_seconds: 0.05
      duration_seconds: 0.07
aof_rewrite_percentage:
  description:
    - The live C(auto-aof-rewrite-percentage) after the run; V(0) means automatic AOF
      rewrites are off (the AOF grows without bound).
  returned: state=present and not check mode
  type: int
  sample: 100
reconciled:
  description:
    - What the run cleaned up or finished that a killed or out-of-space run had left
      (C(removed), C(adopted), C(removed_damaged), C(finished_deletes), C(scratch_server),
      C(aof_rewrite), C(pointers)); absent when there was nothing.
  returned: state=present or state=verified, when anything was left
  type: dict
files:
  description: Paths of the snapshot files written.
  returned: state=present and not check mode
  type: list
  elements: str
would_write:
  description: Paths a snapshot would write (check mode).
  returned: state=present in check mode
  type: list
  elements: str
skipped:
  description: Formats not snapshotted, with the reason.
  returned: state=present
  type: dict
  sample: {aof: appendonly is no on this instance}
pruned:
  description:
    - The snapshots retention deleted, one dict each with C(file), C(kind), C(time) and the
      C(reason).
  returned: state=present and not check mode
  type: list
  elements: dict
  sample:
    - file: dump-2026-01-06T09:00:00.rdb
      kind: rdb
      time: "2026-01-06T09:00:00"
      reason: older than 1 day
snapshot:
  description: File name of the snapshot restored.
  returned: state=restored
  type: str
verified:
  description: True when every snapshot checked passed.
  returned: state=verified
  type: bool
keys:
  description: Keys in Redis after the restore.
  returned: state=restored and not check mode
  type: int
expected_keys:
  description: Key count the manifest recorded for the snapshot.
  returned: state=restored
  type: int
aside_dir:
  description: Where the data files Redis had before the restore were moved.
  returned: state=restored and not check mode
  type: str
loaded_from:
  description: What Redis loaded after the restore (V(aof) when C(appendonly yes), else V(rdb)).
  returned: state=restored and not check mode
  type: str
size_bytes:
  description: Bytes written (all snapshots), restored or verified.
  returned: always
  type: int
duration_seconds:
  description: Wall time of the run in seconds.
  returned: always
  type: float
'''

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.codeb.backup.plugins.module_utils.errors import as_backup_error
from ansible_collections.codeb.backup.plugins.module_utils.spec import argument_spec
from ansible_collections.codeb.backup.plugins.module_utils.redis import options
from ansible_collections.codeb.backup.plugins.module_utils.redis.connection import HAS_REDIS
from ansible_collections.codeb.backup.plugins.module_utils.redis.restore import (
    predict_restore, restore_snapshot,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.snapshot import (
    predict_snapshot, take_snapshot,
)
from ansible_collections.codeb.backup.plugins.module_utils.redis.verify import verify_snapshots


def run(params, check_mode):
    conn = options.connection_params(params)
    state = params['state']
    if state == 'present':
        common = dict(backup_dir=params['backup_dir'], instance=params['instance'],
                      formats=params['formats'], data_dir=params['data_dir'],
                      timeout=params['timeout'])
        if check_mode:
            return predict_snapshot(conn, **common)
        return take_snapshot(
            conn, keep_min=params['keep_min'], rdb_max_age_hours=params['rdb_max_age_hours'],
            aof_keep=params['aof_keep'], prune_old=params['prune'],
            verify_load=params['verify_load'], metrics_dir=params['metrics_dir'] or '',
            lock_timeout=params['lock_timeout'], **common)
    if state == 'restored':
        if check_mode:
            return predict_restore(
                conn, params['backup_dir'], params['snapshot'], params['snapshot_format'],
                instance=params['instance'], service_name=params['service_name'],
                stop_command=params['stop_command'], start_command=params['start_command'],
                data_dir=params['data_dir'], timeout=params['timeout'])
        return restore_snapshot(
            conn, backup_dir=params['backup_dir'], snapshot=params['snapshot'],
            snapshot_format=params['snapshot_format'], instance=params['instance'],
            service_name=params['service_name'], stop_command=params['stop_command'],
            start_command=params['start_command'], data_dir=params['data_dir'],
            appendonly=params['appendonly'], timeout=params['timeout'],
            metrics_dir=params['metrics_dir'] or '', lock_timeout=params['lock_timeout'])
    return verify_snapshots(
        params['backup_dir'], snapshot=params['snapshot'],
        snapshot_format=params['snapshot_format'],
        instance=params['instance'], metrics_dir=params['metrics_dir'] or '',
        lock_timeout=params['lock_timeout'], check_mode=check_mode)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(options.CONNECTION_OPTIONS + options.SNAPSHOT_OPTIONS),
        supports_check_mode=True,
    )
    if not HAS_REDIS and module.params['state'] != 'verified':
        module.fail_json(msg=missing_required_lib('redis (Debian: python3-redis)'))
    try:
        result = run(module.params, module.check_mode)
    except Exception as exc:  # every failure, whatever its type, as a result naming what failed
        module.fail_json(**as_backup_error(exc, 'redis_snapshot state=%s' % module.params['state'])
                         .as_result())
    module.exit_json(**result)


if __name__ == '__main__':
    main()
