# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Running external tools (pg_dump, redis-check-rdb, pgbackrest, nginx ...).

Secrets go in through the environment or a 0600 file, never on the command line.
A tool that fails raises BackupError with the tail of its stderr.
"""

from __future__ import annotations

import ctypes
import os
import subprocess

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError

STDERR_TAIL = 2000


def die_with_parent():
    """``preexec_fn`` for a tool or helper server that must never outlive a killed run:
    the kernel sends it SIGKILL when its parent dies (PR_SET_PDEATHSIG=1, SIGKILL=9)."""
    try:
        ctypes.CDLL(None).prctl(1, 9)
    except Exception:  # pragma: no cover - non-Linux
        pass


def _popen_kwargs(env, unset, kwargs):
    """Popen keyword arguments with the environment: the current one, the names in
    ``unset`` removed, ``env`` added."""
    full_env = dict(os.environ)
    for name in unset:
        full_env.pop(name, None)
    if env:
        full_env.update(env)
    kwargs = dict(kwargs)
    kwargs['env'] = full_env
    return kwargs


def run(argv, env=None, what=None, timeout=None, input_data=None, check=True, unset=(),
        **popen_kwargs):
    """Run ``argv`` (a list, no shell) and return CompletedProcess with text output.

    ``env`` is added to the current environment after the names in ``unset`` are removed
    from it; ``popen_kwargs`` go to subprocess (``user``/``group`` to switch the OS user,
    ``pass_fds``, ``cwd``, ``preexec_fn=die_with_parent``; ``stdout``/``stderr`` are
    captured unless given). On a non-zero exit (when ``check``), raise BackupError naming
    ``what`` (default: the program) and quoting its stderr.
    """
    kwargs = _popen_kwargs(env, unset, popen_kwargs)
    kwargs.setdefault('stdout', subprocess.PIPE)
    kwargs.setdefault('stderr', subprocess.PIPE)
    try:
        proc = subprocess.run(argv, input=input_data, text=True, timeout=timeout, check=False,
                              **kwargs)
    except FileNotFoundError:
        raise BackupError('%s is not installed or not on PATH' % argv[0])
    except subprocess.TimeoutExpired:
        raise BackupError('%s did not finish within %s s' % (what or argv[0], timeout))
    if check and proc.returncode != 0:
        raise BackupError('%s failed (exit %d): %s' % (
            what or os.path.basename(argv[0]), proc.returncode,
            (proc.stderr or proc.stdout or '').strip()[-STDERR_TAIL:]),
            rc=proc.returncode)
    return proc


def spawn(argv, env=None, unset=(), **popen_kwargs):
    """Start ``argv`` and return its Popen, for the two things ``run`` cannot do: a
    pipeline whose tools stream into each other (pg_dump | zstd) and a coprocess that
    keeps one session open while other tools run (psql holding the transaction whose
    snapshot pg_dump uses). Same environment rules and defaults as ``run``; the caller
    waits for it."""
    try:
        return subprocess.Popen(argv, **_popen_kwargs(env, unset, popen_kwargs))
    except FileNotFoundError:
        raise BackupError('%s is not installed or not on PATH' % argv[0])
