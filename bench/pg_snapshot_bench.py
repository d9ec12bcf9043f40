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
             ours  pg_snapshot state=restored              verify + restore + row check + swap
                   with each of --restore-candidates (pg_restore session settings, jobs),
                   every run paired with a seed restore next to it, --rounds times
  and optionally where a serial restore's time goes (--phases) and what CREATE DATABASE
  costs with each STRATEGY,

and prints times, sizes and ratios. Run as root from the repository root:

  .venv/bin/python bench/pg_snapshot_bench.py [--rows N] [--candidates zstd:1,gzip:1]
      [--restore-candidates none,default,maintenance_work_mem=1GB+jobs=2] [--rounds 3]
      [--phases none,default]
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
DEFAULT_SETTINGS = restore.RESTORE_SESSION_SETTINGS

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

# One transaction per table (a DO block may COMMIT when it is the only statement sent), so
# building thousands of tables does not exhaust the lock table.
MANY_TABLES_SQL = r"""
DO $$
BEGIN
    FOR i IN 1..%(tables)d LOOP
        EXECUTE format('CREATE TABLE t%%s (id int PRIMARY KEY, note text NOT NULL)', i);
        EXECUTE format('INSERT INTO t%%s SELECT g, md5(g::text) FROM generate_series(1, 100) g',
                       i);
        EXECUTE format('CREATE INDEX ON t%%s (note)', i);
        COMMIT;
    END LOOP;
END $$
"""


def timed(func):
    start = time.monotonic()
    result = func()
    return time.monotonic() - start, result


def sh(argv, env):
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)


def load():
    with open('/proc/loadavg') as handle:
        return ' '.join(handle.read().split()[:3])


def median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def parse_candidate(text):
    """``none`` | ``default`` | ``name=value+name=value+jobs=2`` -> (label, settings, jobs).

    ``default`` stands for the core's RESTORE_SESSION_SETTINGS, ``none`` for no session
    settings; ``jobs`` is the restore's ``jobs`` option, every other name a session setting."""
    settings, jobs = [], 1
    for part in [t for t in text.split('+') if t]:
        if part == 'default':
            settings += list(DEFAULT_SETTINGS)
        elif part != 'none':
            name, value = part.split('=', 1)
            if name == 'jobs':
                jobs = int(value)
            else:
                settings.append((name, value))
    return text, tuple(settings), jobs


def wal_syncs(cluster):
    """(WAL fsyncs so far, seconds they took): what waiting for commits costs, counted by the
    server itself, so it does not move with the machine's load as wall time does."""
    count, msec = cluster.psql('SELECT wal_sync, wal_sync_time FROM pg_stat_wal').split('|')
    return int(count), float(msec) / 1000


def checkpoint(cluster):
    start = time.monotonic()
    cluster.psql('CHECKPOINT')
    return time.monotonic() - start


def restore_rounds(args, cluster, env, params, seed_file, snap, candidates):
    """Time every candidate ``args.rounds`` times, each run paired with a seed restore right
    next to it (seed first in odd rounds, second in even ones: whoever runs second profits
    from the page cache). The other engineers' load drifts over minutes, so the ratio
    within a pair is steadier than a ratio of medians. Before each timed run a CHECKPOINT
    (untimed) writes out the previous run's dirty buffers, so no run pays for another's;
    the CHECKPOINT right after each run is timed separately: it is what writing that run's
    pages to the data files would add if the restore waited for it."""
    times = {}
    for rnd in range(args.rounds):
        for label, settings, jobs in candidates:
            pair = [('seed', None, None), ('ours ' + label, settings, jobs)]
            took = {}
            for name, run_settings, run_jobs in (pair if rnd % 2 == 0 else pair[::-1]):
                took[name] = one_restore(cluster, env, params, seed_file, snap, name,
                                         run_settings, run_jobs, times)
            times.setdefault('ratio ' + label, []).append(took['seed'] / took['ours ' + label])
            print('round %d  pair ratio seed/ours %-44s %.2f' % (
                rnd + 1, label, times['ratio ' + label][-1]), flush=True)
    restore.RESTORE_SESSION_SETTINGS = DEFAULT_SETTINGS
    cluster.psql('DROP DATABASE IF EXISTS r_bench WITH (FORCE)')
    return times


def one_restore(cluster, env, params, seed_file, snap, name, settings, jobs, times):
    pg = cluster.bin
    cluster.psql('DROP DATABASE IF EXISTS r_bench WITH (FORCE)')
    checkpoint(cluster)
    syncs = wal_syncs(cluster)
    start = time.monotonic()
    if settings is None:  # the seed's restore
        sh([os.path.join(pg, 'createdb'), 'r_bench'], env)
        sh([os.path.join(pg, 'pg_restore'), '-d', 'r_bench', seed_file], env)
        steps = ''
    else:
        restore.RESTORE_SESSION_SETTINGS = settings
        res = restore.restore(dict(params, target_database='r_bench', jobs=jobs))
        assert res['tables'] == snap['tables'], 'restored row counts differ'
        steps = json.dumps(res['timings'], sort_keys=True)
    took = time.monotonic() - start
    flushes, flush_seconds = [b - a for a, b in zip(syncs, wal_syncs(cluster))]
    after = checkpoint(cluster)
    times.setdefault(name, []).append(took)
    times.setdefault('checkpoint ' + name, []).append(after)
    times.setdefault('wal flushes ' + name, []).append((flushes, round(flush_seconds, 2)))
    print('  %-60s %6.1f s  WAL flushes %d (%.2f s)  checkpoint after %.2f s  load %s %s'
          % (name, took, flushes, flush_seconds, after, load(), steps), flush=True)
    return took


def restore_phases(cluster, env, dump, settings):
    """Where a serial restore's time goes: ``dump`` (uncompressed, so no decompression is
    counted) restored section by section, and post-data one TOC entry at a time (each
    index build and constraint on its own), with ``settings`` as PGOPTIONS."""
    pg = cluster.bin
    run_env = dict(env, PGOPTIONS=' '.join('-c %s=%s' % s for s in settings))
    cluster.psql('DROP DATABASE IF EXISTS r_phase WITH (FORCE)')
    sh([os.path.join(pg, 'createdb'), 'r_phase'], env)
    phases = {}
    for section in ('pre-data', 'data'):
        checkpoint(cluster)
        start = time.monotonic()
        sh([os.path.join(pg, 'pg_restore'), '--section=' + section, '-d', 'r_phase', dump],
           run_env)
        phases[section] = round(time.monotonic() - start, 2)
    listing = subprocess.run([os.path.join(pg, 'pg_restore'), '-l', '--section=post-data', dump],
                             env=env, check=True, capture_output=True, text=True).stdout
    items = [line for line in listing.splitlines() if line and not line.startswith(';')]
    with tempfile.NamedTemporaryFile('w', suffix='.list') as one:
        for item in items:
            one.seek(0)
            one.truncate()
            one.write(item + '\n')
            one.flush()
            checkpoint(cluster)
            start = time.monotonic()
            sh([os.path.join(pg, 'pg_restore'), '-L', one.name, '-d', 'r_phase', dump], run_env)
            phases['post-data ' + ' '.join(item.split()[3:])] = round(time.monotonic() - start, 2)
    phases['checkpoint after'] = round(checkpoint(cluster), 2)
    cluster.psql('DROP DATABASE r_phase WITH (FORCE)')
    print('phases with %s: %s' % (' '.join('%s=%s' % s for s in settings) or 'no settings',
                                  json.dumps(phases)), flush=True)
    return phases


def createdb_strategies(cluster, rounds):
    """CREATE DATABASE ... TEMPLATE template0 (how the restore makes its temporary database)
    with each STRATEGY, ``rounds`` times, while ``benchdb`` has dirty buffers: FILE_COPY
    checkpoints twice, WAL_LOG (PostgreSQL 15's default) writes template0 through the WAL."""
    times = {}
    for _round in range(rounds):
        for strategy in ('WAL_LOG', 'FILE_COPY'):
            cluster.psql('UPDATE events SET score = score WHERE id % 10 = 0', DB)
            start = time.monotonic()
            cluster.psql('CREATE DATABASE r_strategy TEMPLATE template0 STRATEGY %s' % strategy)
            times.setdefault(strategy, []).append(round(time.monotonic() - start, 2))
            cluster.psql('DROP DATABASE r_strategy')
    print('CREATE DATABASE TEMPLATE template0, after dirtying 10%% of events: %s'
          % json.dumps(times), flush=True)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--rows', type=int, default=2200000,
                        help='rows in the orders table (default builds >= 1 GB on disk)')
    parser.add_argument('--tables', type=int, default=0,
                        help='instead of the orders data, N small tables (100 rows, a primary '
                        'key and an index each): a schema where per-statement costs dominate')
    parser.add_argument('--candidates', default='',
                        help='extra compression settings to time, e.g. zstd:1,gzip:1')
    parser.add_argument('--restore-candidates', default='none,default',
                        help='comma-separated restores to time against the seed\'s: none (no '
                        'session settings), default (the core\'s), or name=value settings '
                        'joined by +, e.g. synchronous_commit=off+maintenance_work_mem=1GB; '
                        'jobs=N sets the restore\'s jobs')
    parser.add_argument('--rounds', type=int, default=3,
                        help='restore rounds (each times the seed and every candidate once)')
    parser.add_argument('--phases', default='',
                        help='comma-separated candidates (as above) whose serial restore is '
                        'also timed section by section and per post-data entry')
    parser.add_argument('--workdir', help='where the cluster and dumps go (default: a temp dir)')
    args = parser.parse_args()
    candidates = [parse_candidate(c) for c in args.restore_candidates.split(',') if c]

    base = tempfile.mkdtemp(prefix='codeb-bench-pg-', dir=args.workdir)
    cluster = PostgresCluster(base, extra_conf={
        'fsync': 'on', 'shared_buffers': "'512MB'", 'max_wal_size': "'4GB'",
        'max_parallel_workers_per_gather': '0', 'track_wal_io_timing': 'on'})
    out = os.path.join(base, 'dumps')
    os.makedirs(out)
    results = {}
    try:
        cluster.start()
        env = dict(os.environ, **cluster.env)
        pg = cluster.bin
        cluster.create_database(DB)
        build_sql = MANY_TABLES_SQL % {'tables': args.tables} if args.tables else BUILD_SQL % {
            'rows': args.rows}
        build_time, _built = timed(lambda: (cluster.psql(build_sql, DB),
                                            cluster.psql('VACUUM ANALYZE', DB)))
        db_size = int(cluster.psql("SELECT pg_database_size('%s')" % DB))
        print('built %s: %.2f GB on disk in %.0f s (%s)'
              % (DB, db_size / 1e9, build_time, '%d tables' % args.tables if args.tables
                 else '%d orders rows' % args.rows), flush=True)
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

        print('restore: %d rounds of %s, each paired with the seed\'s serial pg_restore; load '
              'before: %s' % (args.rounds, ', '.join(c[0] for c in candidates), load()),
              flush=True)
        restores = restore_rounds(args, cluster, env, params, os.path.join(out, 'seed.dump'),
                                  snap, candidates)
        phases = {}
        for label in [c for c in args.phases.split(',') if c]:
            phases[label] = restore_phases(cluster, env, os.path.join(out, 'raw.dump'),
                                           parse_candidate(label)[1])

        strategies = {} if args.tables else createdb_strategies(cluster, args.rounds)
        summary = {
            'database_bytes': db_size,
            'snapshot_speedup_vs_seed': round(t_seed / t_ours, 2),
            'snapshot_size_vs_seed': round(results['ours'][1] / results['seed'][1], 3),
            'snapshot_time_vs_raw': round(t_ours / t_raw, 2),
            'times_seconds': {k: round(v[0], 1) for k, v in results.items()},
            'sizes_bytes': {k: v[1] for k, v in results.items()},
            'restore_seconds': {k: [round(t, 1) for t in v] for k, v in restores.items()
                                if not k.startswith(('checkpoint ', 'ratio ', 'wal '))},
            'restore_wal_flushes_and_seconds': {k[len('wal flushes '):]: v
                                                for k, v in restores.items()
                                                if k.startswith('wal flushes ')},
            'restore_pair_ratios': {k[len('ratio '):]: [round(t, 2) for t in v]
                                    for k, v in restores.items() if k.startswith('ratio ')},
            'checkpoint_after_seconds': {k[len('checkpoint '):]: [round(t, 2) for t in v]
                                         for k, v in restores.items()
                                         if k.startswith('checkpoint ')},
            'restore_phases_seconds': phases,
            'create_database_seconds': strategies,
            'load_after': load(),
        }
        print()
        print('snapshot: %.2fx faster than the seed, %.3fx its size, %.2fx the raw -Z0 time'
              % (summary['snapshot_speedup_vs_seed'], summary['snapshot_size_vs_seed'],
                 summary['snapshot_time_vs_raw']))
        print('restore, %d rounds; time median (min..max); seed/ours = median (min..max) of the '
              'ratios within each pair:' % args.rounds)
        for label in ['seed'] + ['ours ' + c[0] for c in candidates]:
            took, ratios = restores[label], restores.get('ratio ' + label[len('ours '):])
            print('  %-50s %6.1f s (%5.1f..%5.1f)  %s  WAL flushes %d (%.2f s)' % (
                label, median(took), min(took), max(took),
                '%.2fx (%.2f..%.2f)' % (median(ratios), min(ratios), max(ratios)) if ratios
                else '                  ',
                median([f[0] for f in restores['wal flushes ' + label]]),
                median([f[1] for f in restores['wal flushes ' + label]])))
        print(json.dumps(summary, indent=2))
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == '__main__':
    main()
