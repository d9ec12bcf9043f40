"""Redis snapshot: ours (codeb.backup redis_snapshot) against the seed's hourly script
``redis-cli BGSAVE; sleep 5; cp dump.rdb ...``, side by side on one throwaway redis-server.

Run from the repository root (as root on Debian 12, redis-server installed):

    .venv/bin/python bench/redis_snapshot_bench.py [--keys 1000000] [--rounds 3]

Before every run new keys are written, so a copy is *fresh* only if it holds the dataset as
it was when the run started (its key count, read by redis-check-rdb, equals DBSIZE then).
"BGSAVE s" is the time from our request until INFO reports the save finished (what any
correct script must wait for); "early" says whether the copy and check started as soon as
the save's file appeared, before that report (see redis.rdb._EarlyCopy).
Scenario "normal": Redis's own BGSAVE speed. Scenario "slow save": rdb-key-save-delay makes
the BGSAVE take longer than 5 s (a big dataset on a busy disk), where the seed copies the
previous file. Prints wall times, the BGSAVE duration, freshness and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, '.collections'))
sys.path.insert(0, os.path.join(ROOT, 'tests'))

from ansible_collections.codeb.backup.plugins.module_utils.redis import checks  # noqa: E402
from ansible_collections.codeb.backup.plugins.module_utils.redis import snapshot  # noqa: E402
from helpers.servers import RedisServer  # noqa: E402


def seed_way(server, dest):
    """The seed's script, verbatim in spirit: BGSAVE; sleep 5; cp."""
    began = time.monotonic()
    subprocess.run('redis-cli -p %d BGSAVE >/dev/null; sleep 5; cp %s %s' % (
        server.port, os.path.join(server.base, 'dump.rdb'), dest), shell=True, check=True)
    return time.monotonic() - began


def our_way(server, backup_dir):
    began = time.monotonic()
    result = snapshot.take_snapshot(dict(login_port=server.port), backup_dir=backup_dir,
                                    formats=['rdb'], metrics_dir='', prune_old=False)
    return time.monotonic() - began, result['snapshots'][0]


def wait_idle(client):
    while int(client.info('persistence')['rdb_bgsave_in_progress']):
        time.sleep(0.05)


def round_trip(server, work, label, index):
    client = server.client()
    wait_idle(client)
    client.execute_command('DEBUG', 'POPULATE', 1000, 'round%s%d' % (label, index))
    expected = client.dbsize()
    seed_copy = os.path.join(work, 'seed-%s-%d.rdb' % (label, index))
    seed_wall = seed_way(server, seed_copy)
    seed_keys = checks.check_rdb(seed_copy)[0]
    wait_idle(client)

    client.execute_command('DEBUG', 'POPULATE', 1000, 'ours%s%d' % (label, index))
    expected_ours = client.dbsize()
    ours_wall, entry = our_way(server, os.path.join(work, 'ours'))
    return dict(seed_wall=seed_wall, seed_fresh=seed_keys == expected, seed_keys=seed_keys,
                expected=expected, ours_wall=ours_wall, ours_fresh=entry['keys'] == expected_ours,
                ours_keys=entry['keys'], expected_ours=expected_ours,
                bgsave=entry['bgsave_seconds'], size=entry['size_bytes'],
                early=entry.get('early_copy', False))


def report(label, rows):
    print('\n== %s (%d rounds) ==' % (label, len(rows)))
    header = ('round', 'seed s', 'fresh', 'ours s', 'fresh', 'BGSAVE s', 'ours-BGSAVE', 'early')
    print('%-6s %10s %8s %10s %8s %10s %12s %6s' % header)
    for i, row in enumerate(rows):
        print('%-6d %10.2f %8s %10.2f %8s %10.2f %12.2f %6s' % (
            i, row['seed_wall'], row['seed_fresh'], row['ours_wall'], row['ours_fresh'],
            row['bgsave'], row['ours_wall'] - row['bgsave'], row['early']))
    seed = statistics.median(r['seed_wall'] for r in rows)
    ours = statistics.median(r['ours_wall'] for r in rows)
    bgsave = statistics.median(r['bgsave'] for r in rows)
    print('median wall: seed %.2f s, ours %.2f s -> seed/ours = %.2fx; ours - BGSAVE = %.2f s'
          % (seed, ours, seed / ours, ours - bgsave))
    print('fresh copies: seed %d/%d, ours %d/%d; RDB size %.1f MB' % (
        sum(r['seed_fresh'] for r in rows), len(rows), sum(r['ours_fresh'] for r in rows),
        len(rows), rows[-1]['size'] / 1e6))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--keys', type=int, default=1000000)
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--slow-keys', type=int, default=60000,
                        help='dataset of the slow-save scenario')
    parser.add_argument('--slow-delay-us', type=int, default=100,
                        help='rdb-key-save-delay of the slow-save scenario (microseconds per key)')
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix='codeb-redis-bench-')
    os.makedirs(os.path.join(work, 'redis'))
    server = RedisServer(os.path.join(work, 'redis'), appendonly=False,
                         extra_config={'enable-debug-command': 'yes'})
    server.start()
    try:
        client = server.client()
        began = time.monotonic()
        client.execute_command('DEBUG', 'POPULATE', args.keys, 'key', 16)
        print('loaded %d keys in %.1f s; redis-server %s; %s' % (
            client.dbsize(), time.monotonic() - began, client.info('server')['redis_version'],
            'machine: %d cores shared with other jobs' % os.cpu_count()))
        client.save()  # the "previous" snapshot the seed may copy

        normal = [round_trip(server, work, 'n', i) for i in range(args.rounds)]
        report('normal BGSAVE', normal)

    finally:
        server.stop()
    # A save slower than 5 s. rdb-key-save-delay sleeps per key and the kernel's sleep
    # granularity (~60 us) dominates tiny delays, so this uses its own smaller dataset.
    os.makedirs(os.path.join(work, 'redis-slow'))
    slow_server = RedisServer(os.path.join(work, 'redis-slow'), appendonly=False,
                              extra_config={'enable-debug-command': 'yes'})
    slow_server.start()
    try:
        client = slow_server.client()
        client.execute_command('DEBUG', 'POPULATE', args.slow_keys, 'key', 16)
        client.save()
        client.config_set('rdb-key-save-delay', args.slow_delay_us)
        slow = [round_trip(slow_server, work, 's', i) for i in range(max(1, args.rounds - 1))]
        report('slow save: %d keys, rdb-key-save-delay %d us/key' % (
            client.dbsize(), args.slow_delay_us), slow)
    finally:
        slow_server.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
