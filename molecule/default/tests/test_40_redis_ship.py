"""The redis_backup role's hourly cron job, run by hand on `storage`: it snapshots Redis and
ships the snapshot over SSH to `backup` (forced command `codeb-backup receive`), where it
arrives with the same sha256. No control node takes part in the shipping."""

import json
import shlex

CRON = '/etc/cron.d/codeb-redis-backup'
KEY = '/etc/codeb-backup/redis-ship_ed25519'
KNOWN_HOSTS = '/etc/codeb-backup/redis-ship.known_hosts'
SHIP_DIR = '/opt/codeb/db-backup/redis'


def _cron_command(storage):
    """The command of the role's cron entry (after the five time fields and the user)."""
    lines = [line for line in storage.file(CRON).content_string.splitlines()
             if 'codeb-backup redis-snapshot' in line and not line.startswith('#')]
    assert len(lines) == 1, lines
    command = lines[0].split(None, 6)[6]
    assert command.endswith('>/dev/null')
    return command[:-len('>/dev/null')].strip()


def _listing(host):
    out = host.check_output('/usr/local/bin/codeb-backup redis-list --backup-dir %s --verify'
                            % SHIP_DIR)
    return {e['file']: e for e in json.loads(out)['snapshots']}


def test_cron_entry_snapshots_then_ships_over_ssh(storage):
    command = _cron_command(storage)
    argv = shlex.split(command)
    assert '--ship' in argv and argv[argv.index('--ship-host') + 1] == 'backup'
    assert argv[argv.index('--ship-key') + 1] == KEY
    assert argv[argv.index('--ship-known-hosts') + 1] == KNOWN_HOSTS
    assert storage.file(KEY).mode == 0o600


def test_cron_command_by_hand_ships_the_snapshot_verified(storage, backup):
    storage.check_output('redis-cli SET codeb:molecule:ship %s' % 'v1')
    before = _listing(backup)
    run = storage.run(_cron_command(storage))
    assert run.rc == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    taken = {e['file']: e for e in result['snapshots']}
    assert len([n for n in taken if n.endswith('.rdb')]) == 1
    shipped = {s['file']: s for s in result['ship']['shipped']}
    assert set(taken) <= set(shipped) | set(before), (taken, shipped)

    there = _listing(backup)
    for name, entry in taken.items():
        assert name in there, 'not on the backup host: %s' % name
        assert there[name]['sha256'] == entry['sha256']
        assert there[name]['verified'] is True, 'the file on backup hashes to its manifest sha256'
        # the bytes on the backup host, hashed there, equal the storage host's manifest
        remote_sha = backup.check_output('sha256sum %s/%s' % (SHIP_DIR, name)).split()[0]
        assert remote_sha == entry['sha256']
    rdb = [n for n in taken if n.endswith('.rdb')][0]
    assert backup.check_output('readlink %s/current.rdb' % SHIP_DIR) == rdb
    assert backup.check_output('ls -A %s/.incoming' % SHIP_DIR).split() == ['.receive.lock']
    prom = storage.file('/var/lib/prometheus/node-exporter/codeb_backup_redis_ship_redis.prom')
    assert 'codeb_backup_last_status{kind="redis_ship",target="redis"} 1' in prom.content_string

    # nothing new -> nothing travels
    again = storage.run('/usr/local/bin/codeb-backup redis-ship --backup-dir /opt/codeb/db-backup/redis '
                        '--ship-host backup --ship-key %s --ship-known-hosts %s --ship-dir %s'
                        % (KEY, KNOWN_HOSTS, SHIP_DIR))
    assert again.rc == 0, again.stderr
    out = json.loads(again.stdout)
    assert out['shipped'] == [] and set(taken) <= set(out['present'])


def test_shipping_key_runs_only_the_receive_command(storage, backup):
    authorized = backup.file('/root/.ssh/authorized_keys').content_string
    line = [entry for entry in authorized.splitlines() if 'codeb redis ship from storage' in entry]
    assert len(line) == 1
    assert line[0].startswith('restrict,command="/usr/local/bin/codeb-backup receive --root /opt/codeb')
    ssh = ('ssh -i %s -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=%s '
           'root@backup ' % (KEY, KNOWN_HOSTS))
    refused = storage.run(ssh + 'id')
    assert refused.rc == 1 and json.loads(refused.stdout)['failed'] is True
    assert 'uid=' not in refused.stdout
    outside = storage.run(ssh + 'have redis_snapshot /etc')
    assert outside.rc == 1 and 'outside the backup root' in outside.stdout
