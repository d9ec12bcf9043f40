# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Status API latency on loopback against the floor: a static JSON body from the same uvicorn.

    .venv/bin/python bench/status_api_bench.py [--rate 100] [--duration 30] [--python /usr/bin/python3]

Starts a real Prometheus over TSDB blocks of worb's codeb_backup_* series (as the
integration test does), then, under ``--python`` (default Debian's, with its FastAPI 0.92
and uvicorn 0.17, what the backup host runs):

- ours: ``codeb-backup serve-api`` with the cache on (``cache_seconds`` 10), answering
  ``POST /api/tool`` ``backup_status`` for worb with a viewer key;
- the floor: the same uvicorn serving a tiny Starlette app whose one route returns the
  same answer, serialised once at start.

Each gets the same open-loop load, one after the other in this run: ``--rate`` requests
per second for ``--duration`` seconds (asyncio + httpx, keep-alive), each request sent at
its scheduled time whether or not earlier ones have answered, and its latency measured
from that scheduled time (so a stall shows up as queueing, not as fewer requests). It
prints p50, p99 and max of both and the ratio ours / floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, '.collections'))
sys.path.insert(0, os.path.join(ROOT, 'tests'))

from helpers.monitoring import Prometheus, openmetrics, tsdb_blocks  # noqa: E402
from helpers.servers import free_port, stop_process, wait_for  # noqa: E402
from helpers.sshd import cli_wrapper  # noqa: E402
from integration.test_status_api import series  # noqa: E402

BODY = {'tool': 'backup_status', 'params': {'project': 'worb'}}
FLOOR_APP = '''
import sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

BODY = open(sys.argv[1], 'rb').read()


async def static(request):
    return Response(BODY, media_type='application/json')

app = Starlette(routes=[Route('/api/tool', static, methods=['POST']),
                        Route('/healthz', static, methods=['GET'])])
uvicorn.run(app, host='127.0.0.1', port=int(sys.argv[2]), access_log=False,
            server_header=False, log_level='warning')
'''


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def wait_healthy(port, proc, what):
    def ready():
        if proc.poll() is not None:
            raise RuntimeError('%s exited with %s' % (what, proc.returncode))
        try:
            return httpx.get('http://127.0.0.1:%d/healthz' % port, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    wait_for(ready, 60, what)


async def open_loop(url, headers, rate, duration):
    """Latencies (s, from each request's scheduled time) and the non-200 count."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    latencies, failures = [], []
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        warm_up = int(rate)  # requests, one after the other, not measured
        while warm_up:
            await client.post(url, json=BODY, headers=headers)
            warm_up -= 1

        async def one(scheduled):
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                response = await client.post(url, json=BODY, headers=headers)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - scheduled)
            if not ok:
                failures.append(scheduled)

        start = time.perf_counter() + 0.1
        total = int(rate * duration)
        await asyncio.gather(*(one(start + i / rate) for i in range(total)))
    return latencies, len(failures)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--rate', type=float, default=100.0)
    parser.add_argument('--duration', type=float, default=30.0)
    parser.add_argument('--python', default='/usr/bin/python3',
                        help='the Python (and so FastAPI and uvicorn) serving both')
    args = parser.parse_args()

    base = tempfile.mkdtemp(prefix='codeb-bench-status-api-')
    procs, prometheus = [], None
    try:
        now = int(time.time()) // 60 * 60
        prometheus = Prometheus(base, tsdb_blocks(base, openmetrics(series(now), now - 3600, now + 3 * 3600)))
        prometheus.start()
        cli = cli_wrapper(os.path.join(base, 'codeb-backup'), python=args.python)
        keys_file = os.path.join(base, 'keys.json')
        key = json.loads(subprocess.run(
            [cli, 'api-key', 'add', '--team', 'default', '--role', 'viewer', '--keys-file', keys_file],
            capture_output=True, text=True, check=True).stdout)['key']
        ours_port, floor_port = free_port(), free_port()
        config = os.path.join(base, 'status-api.json')
        with open(config, 'w') as handle:
            json.dump({'listen_port': ours_port, 'keys_file': keys_file, 'cache_seconds': 10,
                       'prometheus_url': prometheus.url, 'env_root': os.path.join(base, 'env'),
                       'pg_snapshot_dir': os.path.join(base, 'pg'),
                       'redis_backup_dir': os.path.join(base, 'redis'),
                       'projects': [{'name': 'worb', 'team': 'default', 'redis_instance': 'redis'}]},
                      handle)
        log = open(os.path.join(base, 'servers.log'), 'w')
        ours = subprocess.Popen([cli, 'serve-api', '--config', config], stdout=subprocess.DEVNULL, stderr=log)
        procs.append(ours)
        wait_healthy(ours_port, ours, 'serve-api')
        headers = {'X-API-Key': key}
        answer = httpx.post('http://127.0.0.1:%d/api/tool' % ours_port, json=BODY, headers=headers)
        assert answer.status_code == 200, answer.text
        static = os.path.join(base, 'static.json')
        with open(static, 'wb') as handle:
            handle.write(answer.content)
        floor = subprocess.Popen([args.python, '-c', FLOOR_APP, static, str(floor_port)],
                                 stdout=subprocess.DEVNULL, stderr=log)
        procs.append(floor)
        wait_healthy(floor_port, floor, 'the static floor server')

        results = {}
        for name, port in (('static JSON (floor)', floor_port), ('ours: backup_status', ours_port)):
            latencies, failures = asyncio.run(open_loop(
                'http://127.0.0.1:%d/api/tool' % port, headers, args.rate, args.duration))
            results[name] = dict(p50=percentile(latencies, 0.50), p99=percentile(latencies, 0.99),
                                 max=max(latencies), n=len(latencies), failures=failures)
        print('%d requests/s for %d s each, open loop, %s, loopback'
              % (args.rate, args.duration, args.python))
        print('%-22s %8s %10s %10s %10s %9s' % ('', 'requests', 'p50 ms', 'p99 ms', 'max ms', 'non-200'))
        for name, r in results.items():
            row = (name, r['n'], r['p50'] * 1e3, r['p99'] * 1e3, r['max'] * 1e3, r['failures'])
            print('%-22s %8d %10.2f %10.2f %10.2f %9d' % row)
        floor_r, ours_r = results['static JSON (floor)'], results['ours: backup_status']
        print('ratio ours / floor: p50 %.2fx, p99 %.2fx (goal: p99 <= 2x)'
              % (ours_r['p50'] / floor_r['p50'], ours_r['p99'] / floor_r['p99']))
    finally:
        for proc in procs:
            stop_process(proc)
        if prometheus is not None:
            prometheus.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == '__main__':
    main()
