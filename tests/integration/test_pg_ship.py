"""Shipping pg_dump snapshots to the backup host over a REAL sshd, from a real PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import durable, ship
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from ansible_collections.codeb.backup.plugins.module_utils.postgres import shipping, snapshot
from helpers.sshd import receiving_host, run_cli

DB = 'ship_src'


@pytest.fixture
def backup_host(tmp_path):
    server = receiving_host(tmp_path, '--accept pg_snapshot --option pg_snapshot.keep_min=3')
    yield server
    server.stop()


@pytest.fixture
def taken(pg_cluster, tmp_path):
    """A real snapshot on the "storage host" and its manifest entry."""
    pg_cluster.create_database(DB)
    pg_cluster.psql('CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1234)', DB)
    local = str(tmp_path / 'storage')
    result = snapshot.snapshot(dict(database=DB, backup_dir=local, login_host='127.0.0.1',
                                    login_port=pg_cluster.port, login_password=pg_cluster.password,
                                    metrics_dir=''))
    entry = {k: v for k, v in Manifest(local).load()[result['file']].items()
             if k not in shipping._LOCAL_FIELDS}  # pylint: disable=protected-access
    return os.path.join(local, result['file']), entry


def test_pg_ship_verified_restorable_and_idempotent(pg_cluster, backup_host, taken, tmp_path):
    path, taken = taken
    local = os.path.dirname(path)
    remote = backup_host.root / 'db-backup' / 'postgresql'
    proc = run_cli('pg-ship', '--backup-dir', local, '--metrics-dir', str(tmp_path / 'm'),
                   '--ship-dir', str(remote), *backup_host.cli_args())
    assert proc.returncode == 0, proc.stdout + proc.stderr + backup_host.read_log()
    out = json.loads(proc.stdout)
    assert [s['file'] for s in out['shipped']] == [taken['file']]
    arrived = Manifest(str(remote)).load()
    assert arrived[taken['file']]['sha256'] == taken['sha256']
    assert durable.sha256_file(str(remote / taken['file'])) == taken['sha256']
    # restorable from the backup host's copy
    pg_cluster.create_database('ship_scratch')
    unz = subprocess.run('zstd -dc %s | /usr/lib/postgresql/15/bin/pg_restore -d ship_scratch '
                         '-h 127.0.0.1 -p %d -U postgres' % (remote / taken['file'], pg_cluster.port),
                         shell=True, env=dict(os.environ, PGPASSWORD=pg_cluster.password),
                         capture_output=True, text=True, check=False)
    assert unz.returncode == 0, unz.stderr
    assert pg_cluster.psql('SELECT count(*) FROM t', 'ship_scratch').strip() == '1234'
    again = json.loads(run_cli('pg-ship', '--backup-dir', local, '--metrics-dir', '',
                               '--ship-dir', str(remote), *backup_host.cli_args()).stdout)
    assert again['shipped'] == [] and again['present'] == [taken['file']]
    # a channel this key does not accept is refused
    target = ship.Target(**backup_host.target_kwargs())
    with pytest.raises(BackupError):
        ship.push([], target, 'redis_snapshot', str(remote))


def _receive(path, entry, directory):
    with open(path, 'rb') as stream:
        return ship.receive_stream(stream, 'pg_snapshot', str(directory), entry=entry)


@pytest.mark.parametrize('change,param', [
    (dict(size_bytes=10 ** 18), 'entry.size_bytes'),     # larger than the free space
    (dict(file='../' + DB + '-2026-01-07T10:30:00.dump.zst'), 'entry.file'),
    (dict(sha256='0' * 64), None),                       # damaged in transit
])
def test_receive_refuses_and_writes_nothing(taken, tmp_path, change, param):
    path, entry = taken
    remote = tmp_path / 'backup'
    with pytest.raises(BackupError) as refused:
        _receive(path, dict(entry, **change), remote)
    if param:
        assert refused.value.param == param, str(refused.value)
    left = [os.path.join(d, f) for d, _dirs, files in os.walk(str(tmp_path / 'backup')) for f in files
            if not f.startswith('.')]
    assert left == [], left


def test_import_refuses_an_entry_of_another_database(taken, tmp_path):
    path, entry = taken
    with pytest.raises(BackupError) as refused:
        shipping.import_snapshot(path, dict(entry, database='other'), str(tmp_path / 'backup'))
    assert refused.value.param == 'entry.file'
    assert not os.path.exists(str(tmp_path / 'backup' / entry['file']))


def test_backup_host_retention_keeps_keep_min_when_every_snapshot_is_old(taken, tmp_path):
    """Snapshots stopped weeks ago: 7-day retention would drop all; keep_min stay."""
    path, entry = taken
    remote = str(tmp_path / 'backup')
    suffix = entry['file'][len(DB) + 1 + len(entry['time']):]
    for day in (1, 2, 3, 4):
        when = '2026-01-0%dT02:00:00' % day
        shipping.import_snapshot(path, dict(entry, time=when, file='%s-%s%s' % (DB, when, suffix)),
                                 remote, keep_days=7, keep_min=2)
    kept = sorted(f for f in os.listdir(remote) if f.startswith(DB))
    assert kept == ['%s-2026-01-0%dT02:00:00%s' % (DB, day, suffix) for day in (3, 4)], kept
    assert sorted(Manifest(remote).load()) == kept
