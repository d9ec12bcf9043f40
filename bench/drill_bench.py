# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark: `codeb-backup drill` per kind against the raw commands a person would type
for the same restore, side by side in one run.

Starts throwaway servers (tests/helpers: PostgreSQL 15, one of them archiving to a local
pgBackRest repository, and Redis 7), builds data of the requested size, takes the backups
with the collection's core, then, --rounds times and alternating which goes first (the
page cache favours whoever runs second):

  pg_snapshot  ours: drill --kinds pg_snapshot (sha256, pg_restore --list, initdb + start
                     of a scratch cluster, pg_restore into a scratch database, row counts of
                     every table against the manifest, drop, stop)
               raw:  createdb + `zstd -dc snapshot | pg_restore -d new` on the running
                     cluster, dropdb (no checks)
  redis        ours: drill --kinds redis (size, sha256, redis-check-rdb/aof, load the RDB
                     and the AOF set into a scratch redis-server, key count, sentinel)
               raw:  redis-server --port 0 on a copy of the RDB, then on the unpacked AOF
                     set, each until loaded (PING answers), shutdown
  pgbackrest   ours: drill --kinds pgbackrest (marker rows, WAL flush, restore with a time
                     target, start, recovery, marker check, pg_amcheck, stop, pgbackrest verify)
               raw:  pgbackrest restore into a directory + pg_ctl start + wait until
                     promoted + stop (no target, no checks)

Prints each run, the medians and ratio ours/raw per kind, and the drill's own step times.
Run as root from the repository root:

  .venv/bin/python bench/drill_bench.py [--kinds pg_snapshot,redis,pgbackrest]
      [--pg-mb 256] [--redis-keys 500000] [--pgbackrest-mb 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
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

from helpers import pgbackrest as pgbackrest_helper  # noqa: E402
from helpers.servers import PostgresCluster, RedisServer, wait_for  # noqa: E402

from ansible_collections.codeb.backup.plugins.module_utils.drill import pg_snapshot as drill_pg  # noqa: E402
from ansible_collections.codeb.backup.plugins.module_utils.drill import redis as drill_redis  # noqa: E402
from ansible_collections.codeb.backup.plugins.module_utils.drill.run import run_drills  # noqa: E402
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest  # noqa: E402
from ansible_collections.codeb.backup.plugins.module_utils.postgres import pgbackrest as pb  # noqa: E402
from ansible_collections.codeb.backup.plugins.module_utils.postgres.snapshot import run_state  # noqa: E402
from ansible_collections.codeb.backup.plugins.module_utils.redis import snapshot as redis_snapshot  # noqa: E402

# ports of this benchmark's own servers (never the host's)
PG_PORT, PGBR_PORT, REDIS_PORT = 25410, 25411, 25412
DB = 'drillbench'
STANZA = 'drillbench'
SENTINEL = 'drill:bench:sentinel'
# about 1 KiB per row on disk: md5 text, a jsonb payload, an index
BUILD_SQL = """
CREATE TABLE IF NOT EXISTS items (id bigint PRIMARY KEY, name text NOT NULL, body text NOT NULL,
                                  payload jsonb NOT NULL);
INSERT INTO items
SELECT g, md5(g::text), (SELECT string_agg(md5((g * k)::text || random()::text), ' ')
                         FROM generate_series(1, 24) k),
       jsonb_build_object('n', g, 'tag', substr(md5(random()::text), 1, 8))
FROM generate_series(%(start)d, %(stop)d) g;
CREATE INDEX IF NOT EXISTS items_name ON items (name);
"""
ROWS_PER_MB = 1000


# --phases: seconds spent in the drill's steps, summed per step over one drill
PHASES = {}


def _timed(module, name, label=None):
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        start = time.monotonic()
        try:
            return original(*args, **kwargs)
        finally:
            key = label or name
            PHASES[key] = PHASES.get(key, 0.0) + time.monotonic() - start
    setattr(module, name, wrapper)


def _timed_enter(module, name):
    """A context manager function whose entering (start + load of a server) is timed."""
    original = getattr(module, name)

    @contextlib.contextmanager
    def wrapper(*args, **kwargs):
        start = time.monotonic()
        with original(*args, **kwargs) as value:
            PHASES[name + ' (start+load)'] = PHASES.get(name + ' (start+load)', 0.0) + time.monotonic() - start
            yield value
    setattr(module, name, wrapper)


def profile_phases():
    for name in ('verify_entry', 'restore_into', 'parse_counts', '_wait_ready'):
        _timed(drill_pg, name)
    psql = drill_pg.Connection.psql

    def timed_psql(self, sql, *args, **kwargs):
        start = time.monotonic()
        try:
            return psql(self, sql, *args, **kwargs)
        finally:
            key = 'psql: ' + str(kwargs.get('what') or (args[1] if len(args) > 1 else sql[:30]))
            PHASES[key] = PHASES.get(key, 0.0) + time.monotonic() - start
    drill_pg.Connection.psql = timed_psql
    run = drill_pg.process.run

    def timed_run(*args, **kwargs):
        start = time.monotonic()
        try:
            return run(*args, **kwargs)
        finally:
            key = 'run: ' + str(kwargs.get('what'))
            PHASES[key] = PHASES.get(key, 0.0) + time.monotonic() - start
    drill_pg.process.run = timed_run
    for name in ('verify_artifact', 'count_keys'):
        _timed(drill_redis, name)
    _timed_enter(drill_redis, 'scratch_server')


def load():
    with open('/proc/loadavg') as handle:
        return ' '.join(handle.read().split()[:3])


def grow(cluster, database, megabytes):
    """Insert rows in batches until ``database`` is about ``megabytes`` MiB on disk."""
    rows = megabytes * ROWS_PER_MB
    for start in range(1, rows + 1, 100000):
        cluster.psql(BUILD_SQL % dict(start=start, stop=min(rows, start + 99999)), database)
    cluster.psql('VACUUM ANALYZE items', database)
    return int(cluster.psql("SELECT pg_database_size('%s')" % database))


def sh(argv, **kwargs):
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kwargs)


def drill(params, kind):
    PHASES.clear()
    start = time.monotonic()
    result = run_drills(dict(params, kinds=[kind]))
    took = time.monotonic() - start
    if result['failed']:
        raise SystemExit('the %s drill failed: %s' % (kind, result['msg']))
    return took, result['kinds'][kind]['targets']


# ---------------------------------------------------------------- the raw commands

def raw_pg_snapshot(cluster, store):
    entry = [e for e in Manifest(store).entries() if e.get('database') == DB][-1]
    path = os.path.join(store, entry['file'])
    env = dict(os.environ, **cluster.env)
    start = time.monotonic()
    sh([os.path.join(cluster.bin, 'createdb'), 'raw_restore'], env=env)
    with subprocess.Popen(['zstd', '-dc', path], stdout=subprocess.PIPE) as unzstd:
        sh([os.path.join(cluster.bin, 'pg_restore'), '-d', 'raw_restore'], stdin=unzstd.stdout, env=env)
    assert unzstd.wait() == 0
    sh([os.path.join(cluster.bin, 'dropdb'), 'raw_restore'], env=env)
    return time.monotonic() - start


def _redis_load(base, argv):
    """redis-server --port 0 in ``base`` with ``argv``, until loaded (PING answers); shutdown."""
    sock = os.path.join(base, 'redis.sock')
    proc = subprocess.Popen(['redis-server', '--port', '0', '--unixsocket', sock, '--dir', base,
                             '--save', ''] + argv, stdout=subprocess.DEVNULL)

    def loaded():
        ping = subprocess.run(['redis-cli', '-s', sock, 'PING'], capture_output=True, text=True,
                              check=False)
        return ping.stdout.strip() == 'PONG'
    wait_for(loaded, 600, 'the raw redis-server to load')
    subprocess.run(['redis-cli', '-s', sock, 'SHUTDOWN', 'NOSAVE'], capture_output=True, check=False)
    proc.wait(timeout=60)


def raw_redis(store, scratch):
    """The newest RDB copied and loaded, then the newest AOF set unpacked and loaded."""
    entries = Manifest(store).entries()
    rdb = [e for e in entries if e.get('kind') == 'rdb'][-1]
    aof = [e for e in entries if e.get('kind') == 'aof'][-1]
    base = os.path.join(scratch, 'raw-redis')
    shutil.rmtree(base, ignore_errors=True)
    start = time.monotonic()
    os.makedirs(base)
    shutil.copyfile(os.path.join(store, rdb['file']), os.path.join(base, 'dump.rdb'))
    _redis_load(base, ['--dbfilename', 'dump.rdb', '--appendonly', 'no'])
    shutil.rmtree(base)
    os.makedirs(base)
    sh(['tar', '-xf', os.path.join(store, aof['file']), '-C', base])
    [dirname] = os.listdir(base)
    [manifest] = [n for n in os.listdir(os.path.join(base, dirname)) if n.endswith('.manifest')]
    _redis_load(base, ['--appendonly', 'yes', '--appenddirname', dirname,
                       '--appendfilename', manifest[:-len('.manifest')]])
    took = time.monotonic() - start
    shutil.rmtree(base)
    return took


def raw_pgbackrest(cluster, scratch):
    data = os.path.join(scratch, 'raw-pgbackrest')
    pg_ctl = os.path.join(cluster.bin, 'pg_ctl')
    shutil.rmtree(data, ignore_errors=True)
    start = time.monotonic()
    os.mkdir(data, 0o700)
    shutil.chown(data, 'postgres', 'postgres')
    sh(['runuser', '-u', 'postgres', '--', 'pgbackrest', '--config=' + cluster.config,
        '--stanza=' + STANZA, '--pg1-path=' + data, '--archive-mode=off', 'restore'])
    sh(['runuser', '-u', 'postgres', '--', pg_ctl, '-D', data, '-l', os.path.join(data, 'log'),
        '-w', '-o', "-c listen_addresses='' -p 5432 -k %s -c archive_mode=off" % data, 'start'])

    def promoted():
        out = subprocess.run(['runuser', '-u', 'postgres', '--', os.path.join(cluster.bin, 'psql'),
                              '-h', data, '-p', '5432', '-d', 'postgres', '-Atc',
                              'SELECT pg_is_in_recovery()'], capture_output=True, text=True, check=False)
        return out.stdout.strip() == 'f'
    wait_for(promoted, 600, 'the raw restore to be promoted')
    sh(['runuser', '-u', 'postgres', '--', pg_ctl, '-D', data, '-m', 'fast', '-w', 'stop'])
    took = time.monotonic() - start
    shutil.rmtree(data, ignore_errors=True)
    return took


# ---------------------------------------------------------------- setup and runs

def setup(args, base):
    """The servers, the stores and the drill parameters of every requested kind."""
    # short: the restored cluster's socket lives in its data directory below it (108 bytes)
    scratch_parent = os.path.join(base, 'x')
    os.makedirs(scratch_parent)
    os.chmod(base, 0o755)
    os.chmod(scratch_parent, 0o755)
    params = dict(scratch_path=os.path.join(scratch_parent, 's'),
                  metrics_dir=os.path.join(base, 'metrics'), timeout=1800.0, scratch_reserve_mb=0)
    env = dict(base=base, scratch=scratch_parent, params=params, sizes={})
    if 'pg_snapshot' in args.kinds:
        os.makedirs(os.path.join(base, 'pg'))
        cluster = PostgresCluster(os.path.join(base, 'pg'), port=PG_PORT)
        cluster.start()
        cluster.create_database(DB)
        env['sizes']['pg_snapshot'] = grow(cluster, DB, args.pg_mb)
        store = os.path.join(base, 'pg-store')
        run_state(dict(database=DB, backup_dir=store, login_host='127.0.0.1', login_port=cluster.port,
                       login_password=cluster.password, metrics_dir='', state='present'))
        params.update(pg_backup_dir=store, pg_databases=[DB])
        env.update(pg=cluster, pg_store=store)
    if 'redis' in args.kinds:
        os.makedirs(os.path.join(base, 'redis'))
        server = RedisServer(os.path.join(base, 'redis'), appendonly=True, port=REDIS_PORT)
        server.start()
        server.settle()
        client = server.client()
        client.set(SENTINEL, 'written before the snapshot')
        value = 'v' * 200
        for start in range(0, args.redis_keys, 10000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(args.redis_keys, start + 10000)):
                pipe.set('key:%d' % i, value + str(i))
            pipe.execute()
        store = os.path.join(base, 'redis-store')
        redis_snapshot.take_snapshot(dict(login_host='127.0.0.1', login_port=server.port),
                                     backup_dir=store, instance='bench', metrics_dir='')
        env['sizes']['redis'] = int(client.info('memory')['used_memory'])
        params.update(redis_backup_dir=store, redis_instance='bench', redis_sentinel_key=SENTINEL)
        env.update(redis=server, redis_store=store)
    if 'pgbackrest' in args.kinds:
        os.makedirs(os.path.join(base, 'pgbr'))
        # the helper picks a free port; this benchmark's servers use its own range
        pgbackrest_helper.PostgresCluster = functools.partial(PostgresCluster, port=PGBR_PORT)
        cluster = pgbackrest_helper.archiving_cluster(os.path.join(base, 'pgbr'), STANZA)
        pb.ensure_stanza(STANZA, repo_user='postgres', config=cluster.config)
        env['sizes']['pgbackrest'] = grow(cluster, 'postgres', args.pgbackrest_mb)
        pb.backup(STANZA, 'full', repo_user='postgres', config=cluster.config, metrics_dir='',
                  lock_dir=cluster.lock_dir)
        params.update(pgbackrest_stanza=STANZA, pgbackrest_repo_user='postgres',
                      pgbackrest_config=cluster.config, pgbackrest_primary_unix_socket=cluster.socket_dir,
                      pgbackrest_primary_port=cluster.port)
        env.update(pgbr=cluster)
    return env


RAW = dict(pg_snapshot=lambda env: raw_pg_snapshot(env['pg'], env['pg_store']),
           redis=lambda env: raw_redis(env['redis_store'], env['scratch']),
           pgbackrest=lambda env: raw_pgbackrest(env['pgbr'], env['scratch']))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--kinds', default='pg_snapshot,redis,pgbackrest')
    parser.add_argument('--pg-mb', type=int, default=256, help='size of the snapshotted database')
    parser.add_argument('--redis-keys', type=int, default=500000)
    parser.add_argument('--pgbackrest-mb', type=int, default=64, help='data added to the backed-up cluster')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--phases', action='store_true', help="print where each drill's time went")
    args = parser.parse_args()
    if args.phases:
        profile_phases()
    args.kinds = [k for k in args.kinds.split(',') if k]
    base = tempfile.mkdtemp(prefix='cdb-')
    env = None
    try:
        env = setup(args, base)
        sizes = json.dumps({k: '%.0f MiB' % (v / 2 ** 20) for k, v in env['sizes'].items()})
        print('sizes: %s   load %s' % (sizes, load()), flush=True)
        times = {}
        for rnd in range(args.rounds):
            for kind in args.kinds:
                pair = ['ours', 'raw'] if rnd % 2 == 0 else ['raw', 'ours']
                for who in pair:
                    if who == 'ours':
                        took, targets = drill(env['params'], kind)
                        extra = ' '.join('%s=%s' % (k, v) for k, v in sorted(targets[0].items())
                                         if k.endswith('_seconds'))
                        if PHASES:
                            extra += '\n      phases: ' + ', '.join(
                                '%s %.2f' % (k, v) for k, v in sorted(PHASES.items(), key=lambda kv: -kv[1]))
                    else:
                        took, extra = RAW[kind](env), ''
                    times.setdefault((kind, who), []).append(took)
                    print('round %d  %-11s %-4s %7.2f s  load %s  %s' % (rnd + 1, kind, who, took, load(), extra),
                          flush=True)
        print('\nmedians (%d rounds)' % args.rounds)
        for kind in args.kinds:
            ours, raw = statistics.median(times[(kind, 'ours')]), statistics.median(times[(kind, 'raw')])
            print('%-11s size %6.0f MiB  ours %7.2f s  raw %7.2f s  ratio ours/raw %.2f'
                  % (kind, env['sizes'][kind] / 2 ** 20, ours, raw, ours / raw))
        print('load %s' % load())
    finally:
        for name in ('pg', 'redis', 'pgbr'):
            if env and name in env:
                env[name].stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == '__main__':
    main()
