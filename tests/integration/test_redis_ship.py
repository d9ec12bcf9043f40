"""Shipping Redis snapshots to the backup host over a REAL sshd (tests/helpers/sshd.py).

The sshd is a throwaway process on a loopback port with its own host key and
AuthorizedKeysFile; the shipping key is authorized with ``restrict,command="codeb-backup
receive ..."`` pointing at this repository's CLI, exactly as the redis_backup role sets it
up on a backup host. The snapshots come from a real redis-server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import durable, ship
from ansible_collections.codeb.backup.plugins.module_utils.redis import options as ropts
from ansible_collections.codeb.backup.plugins.module_utils.redis import shipping as rship
from ansible_collections.codeb.backup.plugins.module_utils.redis import snapshot as rsnap
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest
from helpers.sshd import receiving_host, run_cli


@pytest.fixture
def backup_host(tmp_path):
    """A "backup host": sshd whose only authorized key runs `codeb-backup receive`."""
    server = receiving_host(tmp_path, '--accept redis_snapshot --option redis_snapshot.keep_min=3')
    yield server
    server.stop()


def _files(directory):
    return sorted(n for n in os.listdir(directory) if not n.startswith('.'))


def test_cron_command_snapshots_and_ships_verified(redis_factory, backup_host, tmp_path):
    server = redis_factory(appendonly=True)
    client = server.client()
    for i in range(500):
        client.set('k:%d' % i, i)
    local = tmp_path / 'storage'
    remote = backup_host.root / 'db-backup' / 'redis'
    proc = run_cli('redis-snapshot', '--port', str(server.port), '--backup-dir', str(local),
                   '--metrics-dir', str(tmp_path / 'm'), '--ship', '--ship-dir', str(remote),
                   *backup_host.cli_args())
    assert proc.returncode == 0, proc.stdout + proc.stderr + backup_host.read_log()
    result = json.loads(proc.stdout)
    taken = {e['file']: e for e in result['snapshots']}
    assert sorted(taken) == sorted(s['file'] for s in result['ship']['shipped'])
    assert len(taken) == 2  # an RDB and an AOF snapshot

    arrived = Manifest(str(remote)).load()
    assert sorted(arrived) == sorted(taken)
    for name, entry in taken.items():
        # verified on arrival: the receiver's hash of the stream, the import's, and the file's
        assert arrived[name]['sha256'] == entry['sha256']
        assert durable.sha256_file(str(remote / name)) == entry['sha256']
    rdb = [n for n in taken if n.endswith('.rdb')][0]
    assert arrived[rdb]['keys'] == 500
    assert os.readlink(remote / 'current.rdb') == rdb
    assert os.listdir(remote / ship.INCOMING) == [ship.LOCK_NAME]  # no leftovers
    prom = (tmp_path / 'm' / 'codeb_backup_redis_ship_redis.prom').read_text()
    assert 'codeb_backup_last_status{kind="redis_ship",target="redis"} 1' in prom

    # only what the backup host lacks travels
    client.set('later', 1)
    again = run_cli('redis-snapshot', '--port', str(server.port), '--backup-dir', str(local),
                    '--metrics-dir', str(tmp_path / 'm'), '--formats', 'rdb', '--no-prune',
                    '--ship', '--ship-dir', str(remote), *backup_host.cli_args())
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert [s['file'] for s in out['ship']['shipped']] == [out['snapshots'][0]['file']]
    assert sorted(out['ship']['present']) == sorted(taken)


def test_forced_command_refuses_other_commands_and_dirs(redis_factory, backup_host, tmp_path):
    target = ship.Target(**backup_host.target_kwargs())
    for command in ('id', 'rm -rf /', 'put redis_snapshot', 'have other_channel %s' % backup_host.root,
                    'have redis_snapshot /etc', 'have redis_snapshot %s/../x' % backup_host.root):
        proc = subprocess.run(target.argv(command), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False, timeout=60)
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        assert json.loads(proc.stdout)['failed'] is True, command
    assert not os.path.exists('/etc/.incoming')
    # the transport's own client names the receiver's refusal
    with pytest.raises(BackupError) as info:
        ship.push([], target, 'redis_snapshot', '/var/lib')
    assert 'outside the backup root' in info.value.msg


def test_damaged_in_transit_is_refused_and_nothing_stored(redis_factory, backup_host, tmp_path):
    server = redis_factory(appendonly=False)
    server.client().set('a', 1)
    local = str(tmp_path / 'storage')
    entry = rsnap.take_snapshot(dict(login_port=server.port), backup_dir=local,
                                metrics_dir='')['snapshots'][0]
    remote = str(backup_host.root / 'redis')
    # the bytes sent differ from what the manifest entry promises
    damaged = tmp_path / entry['file']
    data = bytearray(open(os.path.join(local, entry['file']), 'rb').read())
    data[-3] ^= 1
    damaged.write_bytes(bytes(data))
    target = ship.Target(**backup_host.target_kwargs())
    with pytest.raises(BackupError) as info:
        ship.push([(str(damaged), entry)], target, ropts.SHIP_CHANNEL, remote)
    assert 'arrived damaged' in info.value.msg
    assert _files(remote) == []
    assert os.listdir(os.path.join(remote, ship.INCOMING)) == [ship.LOCK_NAME]


def test_kill_9_of_ssh_mid_stream_leaves_nothing_final_and_retry_ships(
        redis_factory, backup_host, tmp_path):
    server = redis_factory(appendonly=False, extra_config={'enable-debug-command': 'yes'})
    server.client().execute_command('DEBUG', 'POPULATE', 200000, 'big', 100)
    local = tmp_path / 'storage'
    entry = rsnap.take_snapshot(dict(login_port=server.port), backup_dir=str(local),
                                formats=['rdb'], metrics_dir='')['snapshots'][0]
    assert entry['size_bytes'] > 4 * durable.CHUNK
    remote = backup_host.root / 'redis'
    incoming = remote / ship.INCOMING
    target = ship.Target(**backup_host.target_kwargs())
    # The same ssh command ship.push runs; we feed it half the file, then kill -9 it.
    proc = subprocess.Popen(target.argv('put %s %s' % (ropts.SHIP_CHANNEL, remote)),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write((json.dumps(dict(entry=rship._ship_entry(entry))) + '\n').encode())
    with open(local / entry['file'], 'rb') as source:
        proc.stdin.write(source.read(entry['size_bytes'] // 2))
    proc.stdin.flush()
    partial = []
    deadline = time.monotonic() + 60
    while not partial and time.monotonic() < deadline:
        if incoming.is_dir():
            partial = [n for n in os.listdir(incoming) if n.startswith(durable.TEMP_PREFIX)
                       and os.path.getsize(incoming / n) > 0]
        time.sleep(0.01)
    assert partial, 'the receiver never started writing: %s' % backup_host.read_log()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()
    proc.stderr.close()
    # nothing under a final name, no manifest entry; the receiver sees the stream end and
    # removes its temporary file
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and [n for n in os.listdir(incoming)
                                           if n.startswith(durable.TEMP_PREFIX)]:
        time.sleep(0.05)
    assert [n for n in os.listdir(incoming) if n.startswith(durable.TEMP_PREFIX)] == []
    assert _files(remote) == []
    assert Manifest(str(remote)).load() == {}
    assert _files(local) == sorted(['current.rdb', entry['file'], 'manifest.json'])

    retry = run_cli('redis-ship', '--backup-dir', str(local), '--metrics-dir', '',
                    '--ship-dir', str(remote), *backup_host.cli_args())
    assert retry.returncode == 0, retry.stderr
    shipped = json.loads(retry.stdout)['shipped']
    assert [s['file'] for s in shipped] == [entry['file']]
    assert shipped[0]['result']['received_sha256'] == entry['sha256']
    assert durable.sha256_file(str(remote / entry['file'])) == entry['sha256']
    assert Manifest(str(remote)).load()[entry['file']]['keys'] == 200000


def test_same_host_ship_runs_the_same_receive_path(redis_factory, tmp_path):
    server = redis_factory(appendonly=False)
    server.client().set('x', 1)
    local = str(tmp_path / 'storage')
    rsnap.take_snapshot(dict(login_port=server.port), backup_dir=local, metrics_dir='')
    target_dir = str(tmp_path / 'backup-root' / 'redis')
    out = rship.ship_snapshots(local, ship.Target(), target_dir, metrics_dir='')
    assert len(out['shipped']) == 1 and out['host'] == 'localhost'
    assert _files(target_dir) == sorted(['current.rdb', 'manifest.json',
                                         out['shipped'][0]['file']])
    assert rship.ship_snapshots(local, ship.Target(), target_dir, metrics_dir='')['changed'] is False
    # backup root == this directory (the local inventory): nothing to do
    same = rship.ship_snapshots(local, ship.Target(), local, metrics_dir='')
    assert same['changed'] is False and same['shipped'] == []
    shutil.rmtree(target_dir)
