"""Benchmark: the env store's daily backup vs the seed's naive copy, side by side.

Both run as a cron job would, one process per backup:
  ours:  codeb-backup env backup --project bench --src .env --trigger daily
         (compare with current, write version + log + current durably, under a lock)
  naive: sh -c 'cp .env DIR/$(date -u +%Y-%m-%dT%H:%M:%S).env && cp .env DIR/current.env'
         (the seed's way: a copy every time, no fsync, no log, no check)

Scenarios: the same .env backed up N times (a daily cron on an unchanged file, the normal
case) and a .env changed before each of M backups. Prints wall time per backup, versions
and bytes kept, and the ratios.

Run from the repository root:  python3 bench/env_bench.py [N] [M]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = ('import sys; sys.path.insert(0, %r); '
       'from ansible_collections.codeb.backup.plugins.module_utils.cli import main; '
       'sys.exit(main())' % os.path.join(ROOT, '.collections'))
# $3 is the day number: cron runs once a day, so each run gets its own day's timestamp
NAIVE = ('cp "$1" "$2/$(date -u -d "2026-01-01 +$3 days" +%Y-%m-%dT%H:%M:%S).env" '
         '&& cp "$1" "$2/current.env"')


def make_env(lines, salt=0):
    return ''.join('KEY_%03d="value-%d-%s"\n' % (i, salt, 'x' * 40) for i in range(lines))


def ours(workdir, src, _day):
    subprocess.run([sys.executable, '-c', CLI, 'env', 'backup', '--project', 'bench',
                    '--root', os.path.join(workdir, 'store'), '--src', src,
                    '--metrics-dir', '', '--trigger', 'daily'],
                   check=True, stdout=subprocess.DEVNULL)


def naive(workdir, src, day):
    target = os.path.join(workdir, 'naive')
    os.makedirs(target, exist_ok=True)
    subprocess.run(['sh', '-c', NAIVE, 'naive', src, target, str(day)], check=True)


def library(workdir, src, _day):
    sys.path.insert(0, os.path.join(ROOT, '.collections'))
    from ansible_collections.codeb.backup.plugins.module_utils.env import jobs as env_store
    env_store.backup(os.path.join(workdir, 'store'), 'bench', src=src, trigger='daily',
                     metrics_dir='')


def usage(path):
    files = 0
    size = 0
    for base, _dirs, names in os.walk(path):
        for name in names:
            if name.endswith('.env'):
                files += 1
            size += os.path.getsize(os.path.join(base, name))
    return files, size


def run(label, runs, changing, lines=200):
    results = {}
    for name, func in (('ours', ours), ('library', library), ('naive', naive)):
        workdir = tempfile.mkdtemp(prefix='codeb-env-bench-')
        try:
            src = os.path.join(workdir, 'app.env')
            elapsed = 0.0
            for i in range(runs):
                with open(src, 'w') as handle:
                    handle.write(make_env(lines, i if changing else 0))
                start = time.perf_counter()
                func(workdir, src, i)
                elapsed += time.perf_counter() - start
            store = os.path.join(workdir, 'naive' if name == 'naive' else 'store')
            results[name] = (elapsed / runs, usage(store))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    ours_t, (ours_files, ours_bytes) = results['ours']
    naive_t, (naive_files, naive_bytes) = results['naive']
    print('%s (%d backups of a %d-line .env)' % (label, runs, lines))
    print('  ours : %7.1f ms/backup  %4d .env files  %9d bytes'
          % (ours_t * 1e3, ours_files, ours_bytes))
    print('  ours, in-process (as the Ansible module runs it): %.1f ms/backup'
          % (results['library'][0] * 1e3))
    print('  naive: %7.1f ms/backup  %4d .env files  %9d bytes'
          % (naive_t * 1e3, naive_files, naive_bytes))
    print('  time ratio ours/naive: %.2f   storage ratio ours/naive: %.3f'
          % (ours_t / naive_t, ours_bytes / float(naive_bytes)))
    print('  ours keeps one version per distinct content (+ master.env, current.env, log);'
          ' naive keeps a copy per run')


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    m = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    print('machine: %d CPUs, load average %.2f %.2f %.2f (shared with other work)'
          % ((os.cpu_count() or 0,) + os.getloadavg()))
    run('unchanged .env, daily cron', n, changing=False)
    run('changed .env before every backup', m, changing=True)


if __name__ == '__main__':
    main()
