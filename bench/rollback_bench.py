"""Blue-green rollback benchmark: our way against the naive way, side by side, in one run.

Sets up a throwaway PostgreSQL 15 (a database of --rows rows), a real nginx on loopback and
two HTTP apps, applies the bluegreen role, deploys v1 and v2 with deploy.yml, then times:

- the traffic switch in the core (``traffic.switch``: atomic include, nginx -t, reload,
  wait for new workers), alternating slots --switches times;
- the same switch through the ``codeb.backup.traffic_switch`` module (ansible-playbook);
- ``rollback.yml`` without restore_db, and ``rollback.yml -e restore_db=true``
  (preflight + verification + safety snapshot + restore + switch + state);
- the naive way: a plain ``pg_restore`` of the same snapshot file
  (dropdb, createdb, ``zstd -dc snapshot | pg_restore``), no verification, no safety copy.

Targets (issue 5): switch < 1 s; rollback.yml with restore_db <= plain pg_restore + 10 s.

    .venv/bin/python bench/rollback_bench.py [--rows 500000] [--switches 20] [--repeat 2]
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
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))

from ansible_collections.codeb.backup.plugins.module_utils.bluegreen import traffic  # noqa: E402
from helpers.ansible_runner import run_module  # noqa: E402
from helpers.bluegreen import http_get  # noqa: E402
from helpers.servers import PostgresCluster  # noqa: E402
from test_bluegreen_playbooks import ROLLBACK, Site, _failure  # noqa: E402


def timed(func):
    started = time.monotonic()
    value = func()
    return time.monotonic() - started, value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--rows', type=int, default=500000)
    parser.add_argument('--switches', type=int, default=20)
    parser.add_argument('--repeat', type=int, default=2,
                        help='rollbacks timed each way, and plain pg_restore runs')
    args = parser.parse_args()

    pg = PostgresCluster(tempfile.mkdtemp(prefix='codeb-bench-pg-'))
    pg.start()
    site = Site(pg, 'bench')
    try:
        site.start()
        # v1's migration creates the schema; then fill it to the requested size
        site.deploy('v1')
        pg.psql("INSERT INTO items SELECT g, md5(g::text) || repeat('x', 100) "
                "FROM generate_series(1000, %d) g" % (args.rows + 997), database=site.database)
        pg.psql('VACUUM ANALYZE items', database=site.database)
        size = pg.psql("SELECT pg_database_size('%s')" % site.database)
        site.deploy('v2')
        assert http_get(site.port) == 'v2'
        snapshot = site.state()['blue']['dbSnapshot']
        snapshot_path = os.path.join(site.vars['bluegreen_db_backup_dir'], snapshot)
        snapshot_size = os.path.getsize(snapshot_path)

        # 1. the switch in the core
        nginx_args = site.nginx.module_args
        slots = ['blue', 'green'] * (args.switches // 2)
        times = []
        for slot in slots:
            seconds = timed(lambda: traffic.switch('bench', slot, **nginx_args))[0]
            assert http_get(site.port) == ('v1' if slot == 'blue' else 'v2')
            times.append(seconds)
        # 2. the switch through the module (ansible-playbook start-up included)
        module_times = []
        for slot in ('blue', 'green'):
            seconds, result = timed(lambda: run_module('codeb.backup.traffic_switch', dict(
                nginx_args, project='bench', slot=slot)))
            assert result.get('changed'), result
            module_times.append((seconds, result['duration_seconds']))

        # 3. rollback.yml without restore_db: back and forth, --repeat times each way
        plain_times, db_times, naive_times = [], [], []
        for _run in range(args.repeat):
            for expect in ('v1', 'v2'):
                seconds, (rc, out, err) = timed(lambda: site.play(ROLLBACK))
                assert rc == 0, _failure(out, err)
                assert http_get(site.port) == expect
                plain_times.append(seconds)

        # 4. rollback.yml with restore_db: back (v1's data) and forward (v2's safety snapshot)
        for _run in range(args.repeat):
            for expect, rows in (('v1', args.rows), ('v2', args.rows + 1)):
                seconds, (rc, out, err) = timed(lambda: site.play(ROLLBACK, restore_db=True))
                assert rc == 0, _failure(out, err)
                assert http_get(site.port) == expect
                assert pg.psql('SELECT count(*) FROM items', database=site.database) == str(rows)
                db_times.append(seconds)

        # 5. the naive way: plain pg_restore of the same snapshot
        env = dict(os.environ, **pg.env)

        def naive():
            subprocess.run([os.path.join(pg.bin, 'dropdb'), '--force', 'bench_naive'], env=env,
                           capture_output=True, check=False)
            subprocess.run([os.path.join(pg.bin, 'createdb'), 'bench_naive'], env=env, check=True)
            zstd = subprocess.Popen(['zstd', '-dc', snapshot_path], stdout=subprocess.PIPE)
            subprocess.run([os.path.join(pg.bin, 'pg_restore'), '--no-owner', '-d', 'bench_naive'],
                           stdin=zstd.stdout, env=env, check=True)
            zstd.stdout.close()
            assert zstd.wait() == 0
        for _run in range(args.repeat):
            naive_times.append(timed(naive)[0])
            assert pg.psql('SELECT count(*) FROM items', database='bench_naive') == str(args.rows)
    finally:
        site.stop()
        pg.stop()
        shutil.rmtree(pg.base, ignore_errors=True)

    print('database: %d rows, %.1f MiB; snapshot %s (%.1f MiB)'
          % (args.rows, int(size) / 2 ** 20, snapshot, snapshot_size / 2 ** 20))
    print('traffic switch, core (%d switches): median %.3f s, max %.3f s'
          % (len(times), statistics.median(times), max(times)))
    for wall, inner in module_times:
        print('traffic switch, module via ansible-playbook: %.2f s wall (module itself %.3f s)'
              % (wall, inner))
    t_plain_rb = statistics.median(plain_times)
    t_db_rb = statistics.median(db_times)
    t_naive = statistics.median(naive_times)
    print('rollback.yml without restore_db: median %.2f s of %d (%s)'
          % (t_plain_rb, len(plain_times), ', '.join('%.1f' % t for t in plain_times)))
    print('rollback.yml with restore_db:    median %.2f s of %d (%s)'
          % (t_db_rb, len(db_times), ', '.join('%.1f' % t for t in db_times)))
    print('plain pg_restore of the same snapshot (naive): median %.2f s of %d (%s)'
          % (t_naive, len(naive_times), ', '.join('%.1f' % t for t in naive_times)))
    print('ratio rollback.yml restore_db / plain pg_restore: %.2f; difference %+.2f s '
          '(target <= +10 s)' % (t_db_rb / t_naive, t_db_rb - t_naive))
    print('restore_db costs %+.2f s over the same rollback without it'
          % (t_db_rb - t_plain_rb))


if __name__ == '__main__':
    main()
