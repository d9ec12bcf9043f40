"""Run the ``codeb-backup`` host command and SIGKILL it at a chosen moment.

    python killer.py --at rename:2 -- pg-snapshot --database worb ...

``--at OP:N`` kills the process right before (``OP``) or right after (``OP+``) its N-th
call of OP, one of ``rename`` (every commit point), ``unlink``, ``rmtree``, ``fsync``,
``write`` (a file opened for writing by Python), ``manifest`` (the N-th manifest write) or
``spawn=TEXT`` (the N-th external command whose arguments contain TEXT, e.g. a psql
statement).
Without ``--at`` the command simply runs; the tests kill it after a random delay instead.
The hooks live here, in the test harness: production code has none.
The process prints ``KILL-POINT OP:N`` to stderr just before it dies, so a test can tell
whether the point was reached.
"""

from __future__ import annotations

import argparse
import builtins
import os
import shutil
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, '.collections'))


def _die(point):
    sys.stderr.write('KILL-POINT %s\n' % point)
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(op, nth, after):
    from ansible_collections.codeb.backup.plugins.module_utils import manifest

    calls = {'n': 0}

    def counted(original, point):
        def wrapper(*args, **kwargs):
            calls['n'] += 1
            if calls['n'] == nth and not after:
                _die(point)
            result = original(*args, **kwargs)
            if calls['n'] == nth and after:
                _die(point + '+')
            return result
        return wrapper

    point = '%s:%d' % (op, nth)
    if op.startswith('spawn='):
        import subprocess
        text, real_init = op[len('spawn='):], subprocess.Popen.__init__

        def init(self, args, *rest, **kwargs):
            if text in ' '.join(str(a) for a in (args if isinstance(args, (list, tuple))
                                                 else [args])):
                calls['n'] += 1
                if calls['n'] == nth and not after:
                    _die(point)
            real_init(self, args, *rest, **kwargs)
            if text in ' '.join(str(a) for a in (args if isinstance(args, (list, tuple))
                                                 else [args])) and calls['n'] == nth and after:
                self.wait()
                _die(point + '+')
        subprocess.Popen.__init__ = init
    elif op == 'rename':
        os.rename = counted(os.rename, point)
        os.replace = counted(os.replace, point)
    elif op == 'unlink':
        os.unlink = counted(os.unlink, point)
        os.remove = os.unlink
    elif op == 'rmtree':
        shutil.rmtree = counted(shutil.rmtree, point)
    elif op == 'fsync':
        os.fsync = counted(os.fsync, point)
    elif op == 'write':
        real_open = builtins.open

        def opening(file, mode='r', *args, **kwargs):
            if any(flag in mode for flag in 'wax+'):
                calls['n'] += 1
                if calls['n'] == nth:
                    _die(point)
            return real_open(file, mode, *args, **kwargs)
        builtins.open = opening
    elif op == 'manifest':
        original = manifest.durable.atomic_write_json

        def write_json(path, obj, *args, **kwargs):
            if os.path.basename(path).startswith(manifest.MANIFEST_NAME):
                calls['n'] += 1
                if calls['n'] == nth and not after:
                    _die(point)
                result = original(path, obj, *args, **kwargs)
                if calls['n'] == nth and after:
                    _die(point + '+')
                return result
            return original(path, obj, *args, **kwargs)
        manifest.durable.atomic_write_json = write_json
    else:
        raise SystemExit('unknown kill point %s' % op)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--at', help='OP:N or OP+:N')
    parser.add_argument('argv', nargs=argparse.REMAINDER)
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ['--'] else args.argv
    if args.at:
        op, _sep, nth = args.at.rpartition(':')
        install(op.rstrip('+'), int(nth), op.endswith('+'))
    from ansible_collections.codeb.backup.plugins.module_utils import cli
    sys.exit(cli.main(argv))


if __name__ == '__main__':
    main()
