"""Benchmark: our pg_snapshot against the seed's ``pg_dump -Fc`` and a raw ``-Z0`` dump.

Starts a throwaway PostgreSQL 15 cluster (tests/helpers/servers.py), builds a database of
realistic, not trivially compressible data with server-side SQL (random hex and word text,
jsonb, timestamps, numerics, three indexes; >= 1 GB on disk by default), then times in one
run, one after the other:

  snapshots: seed  pg_dump -Fc (default gzip level)       the seed's daily job
             raw   pg_dump -Fc -Z0                         the floor: no compression
             ours  pg_snapshot state=present (default)     dump + zstd + check + sha256 + counts
             and optional candidates (--candidates zstd:1,gzip:1 ...)
  restores:  seed  createdb + serial pg_restore of the seed's file
             ours  pg_snapshot state=restored (default)    verify + restore + row check + swap

and prints times, sizes and ratios. Run as root from the repository root:

  .venv/bin/python bench/pg_snapshot_bench.py [--rows N] [--candidates zstd:1,gzip:1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, '.collections'))
sys.path.insert(0, os.path.join(ROOT, 'tests'))

from helpers.servers import PostgresCluster  # noqa: E402

from ansible_collections.codeb.backup.plugins.module_utils.postgres import restore, snapshot  # noqa: E402

DB = 'benchdb'

BUILD_SQL = r"""
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    created_at timestamptz NOT NULL,
    customer text NOT NULL,
    amount numeric(12,2) NOT NULL,
    status text NOT NULL,
    note text NOT NULL,
    payload jsonb NOT NULL
);
INSERT INTO orders
SELECT g,
       timestamptz '2025-01-01' + (random() * 365 * 86400) * interval '1 second',
       'cust-' || substr(md5(random()::text), 1, 12),
       round((random() * 10000)::numeric, 2),
       (ARRAY['new','paid','shipped','cancelled','refunded'])[1 + floor(random() * 5)::int],
       (SELECT string_agg((ARRAY['order','delivery','customer','payment','invoice','late',
               'express','warehouse','return','gift','address','changed','please','call',
               'before','after','monday','friday','fragile','box'])[1 + floor(random() * 20)::int]
               || CASE WHEN random() < 0.3 THEN ' ' || floor(random() * 100000)::text ELSE '' END,
               ' ') FROM generate_series(1, 8 + (g %% 5))),
       jsonb_build_object('sku', md5(g::text || random()::text),
                          'qty', floor(random() * 20)::int,
                          'price', round((random() * 500)::numeric, 2),
                          'tags', jsonb_build_array(substr(md5(random()::text), 1, 6),
                                                    substr(md5(random()::text), 1, 6)),
                          'ip', (floor(random() * 255)::int)::text || '.' ||
                                (floor(random() * 255)::int)::text || '.' ||
                                (floor(random() * 255)::int)::text || '.1')
FROM generate_series(1, %(rows)d) g;
CREATE INDEX orders_created_at ON orders (created_at);
CREATE INDEX orders_customer ON orders (customer);
CREATE TABLE events AS
SELECT g AS id, (g %% 100000) AS order_id, now() - g * interval '1 second' AS at,
       md5(g::text) || md5((g * 7)::text) AS token, random() * 1000 AS score
FROM generate_series(1, %(rows)d / 2) g;
ALTER TABLE events ADD PRIMARY KEY (id);
"""


def timed(func):
    start = time.monotonic()
    result = func()
    return time.monotonic() - start, result


def sh(argv, env):
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--rows', type=int, default=2200000,
                        help='rows in the orders table (default builds >= 1 GB on disk)')
    parser.add_argument('--candidates', default='',
                        help='extra compression settings to time, e.g. zstd:1,gzip:1')
    parser.add_argument('--workdir', help='where the cluster and dumps go (default: a temp dir)')
    args = parser.parse_args()

    base = tempfile.mkdtemp(prefix='codeb-bench-pg-', dir=args.workdir)
    cluster = PostgresCluster(base, extra_conf={
        'fsync': 'on', 'shared_buffers': "'512MB'", 'max_wal_size': "'4GB'",
        'max_parallel_workers_per_gather': '0'})
    out = os.path.join(base, 'dumps')
    os.makedirs(out)
    results = {}
    try:
        cluster.start()
        env = dict(os.environ, **cluster.env)
        pg = cluster.bin
        cluster.create_database(DB)
        build_time, _built = timed(lambda: (cluster.psql(BUILD_SQL % {'rows': args.rows}, DB),
                                            cluster.psql('VACUUM ANALYZE', DB)))
        db_size = int(cluster.psql("SELECT pg_database_size('%s')" % DB))
        print('built %s: %.2f GB on disk in %.0f s (%d orders rows)'
              % (DB, db_size / 1e9, build_time, args.rows), flush=True)
        params = dict(database=DB, backup_dir=os.path.join(out, 'ours'),
                      login_unix_socket=cluster.socket_dir, login_port=cluster.port,
                      metrics_dir=os.path.join(out, 'metrics'))

        def seed_dump():
            sh([os.path.join(pg, 'pg_dump'), '-Fc', '-f', os.path.join(out, 'seed.dump'), DB], env)

        def raw_dump():
            sh([os.path.join(pg, 'pg_dump'), '-Fc', '-Z0', '-f', os.path.join(out, 'raw.dump'),
                DB], env)

        # warm the cache once so the first timed run is not penalised
        raw_dump()
        t_raw, _out = timed(raw_dump)
        results['raw'] = (t_raw, os.path.getsize(os.path.join(out, 'raw.dump')))
        print('raw  pg_dump -Fc -Z0      %7.1f s  %7.1f MB' % (t_raw, results['raw'][1] / 1e6),
              flush=True)
        t_seed, _out = timed(seed_dump)
        results['seed'] = (t_seed, os.path.getsize(os.path.join(out, 'seed.dump')))
        print('seed pg_dump -Fc          %7.1f s  %7.1f MB' % (t_seed, results['seed'][1] / 1e6),
              flush=True)
        t_ours, snap = timed(lambda: snapshot.snapshot(params))
        results['ours'] = (t_ours, snap['size_bytes'])
        print('ours pg_snapshot %-9s %7.1f s  %7.1f MB' % (
            snap['compression'], t_ours, snap['size_bytes'] / 1e6), flush=True)
        for cand in [c for c in args.candidates.split(',') if c]:
            t_c, res = timed(lambda: snapshot.snapshot(dict(
                params, compression=cand, backup_dir=os.path.join(out, 'cand')), now=None))
            results['candidate ' + cand] = (t_c, res['size_bytes'])
            print('cand pg_snapshot %-9s %7.1f s  %7.1f MB' % (cand, t_c, res['size_bytes'] / 1e6),
                  flush=True)
            shutil.rmtree(os.path.join(out, 'cand'))

        def seed_restore():
            sh([os.path.join(pg, 'createdb'), 'r_seed'], env)
            sh([os.path.join(pg, 'pg_restore'), '-d', 'r_seed', os.path.join(out, 'seed.dump')],
               env)

        t_seed_r, _out = timed(seed_restore)
        print('seed restore (serial pg_restore)  %7.1f s' % t_seed_r, flush=True)
        t_ours_r, res = timed(lambda: restore.restore(dict(params, target_database='r_ours', jobs=2)))
        print('ours restore (jobs=2, verify, row check)  %7.1f s' % t_ours_r, flush=True)
        assert res['tables'] == snap['tables'], 'restored row counts differ'
        print('     restore steps: %s' % json.dumps(res['timings'], sort_keys=True), flush=True)
        t_ours_r1, res1 = timed(lambda: restore.restore(dict(params, target_database='r_ours1',
                                                             jobs=1)))
        print('ours restore (jobs=1, streamed from zstd)  %7.1f s  steps: %s'
              % (t_ours_r1, json.dumps(res1['timings'], sort_keys=True)), flush=True)

        summary = {
            'database_bytes': db_size,
            'snapshot_speedup_vs_seed': round(t_seed / t_ours, 2),
            'snapshot_size_vs_seed': round(results['ours'][1] / results['seed'][1], 3),
            'snapshot_time_vs_raw': round(t_ours / t_raw, 2),
            'restore_speedup_vs_seed': round(t_seed_r / t_ours_r, 2),
            'restore_speedup_vs_seed_jobs_1': round(t_seed_r / t_ours_r1, 2),
            'times_seconds': {k: round(v[0], 1) for k, v in results.items()},
            'sizes_bytes': {k: v[1] for k, v in results.items()},
            'restore_seconds': {'seed': round(t_seed_r, 1), 'ours_jobs_2': round(t_ours_r, 1),
                                'ours_jobs_1': round(t_ours_r1, 1)},
        }
        print()
        print('snapshot: %.2fx faster than the seed, %.3fx its size, %.2fx the raw -Z0 time'
              % (summary['snapshot_speedup_vs_seed'], summary['snapshot_size_vs_seed'],
                 summary['snapshot_time_vs_raw']))
        print('restore:  %.2fx (jobs=2) and %.2fx (jobs=1) faster than the seed\'s serial pg_restore'
              % (summary['restore_speedup_vs_seed'], summary['restore_speedup_vs_seed_jobs_1']))
        print(json.dumps(summary, indent=2))
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == '__main__':
    main()
