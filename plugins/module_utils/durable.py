# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Durable, atomic writes of backup artifacts.

Every artifact is written under a temporary name in its final directory, fsynced, renamed
to its final name, and the directory fsynced. A run killed at any moment leaves at most a
temporary file (``TEMP_PREFIX`` + ...), never a partial file under a final name;
``remove_stale_temps`` clears those on the next run, under the job's lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile

TEMP_PREFIX = '.tmp-'
CHUNK = 1024 * 1024


def fsync_dir(path):
    """fsync a directory so a rename or unlink in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_dir(path, mode=0o700):
    """Create ``path`` (and parents) with ``mode`` if missing; return True if created."""
    if os.path.isdir(path):
        return False
    os.makedirs(path, mode=mode, exist_ok=True)
    os.chmod(path, mode)
    parent = os.path.dirname(os.path.abspath(path))
    fsync_dir(parent)
    return True


def sha256_bytes(data):
    """The sha256 of ``data`` as the manifests record it (lowercase hex)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def temp_path(final_path):
    """A unique temporary name beside ``final_path`` (same filesystem, so rename is atomic)."""
    directory, base = os.path.split(os.path.abspath(final_path))
    fd, path = tempfile.mkstemp(prefix='%s%s.' % (TEMP_PREFIX, base), dir=directory)
    os.close(fd)
    return path


def commit(temp, final_path, mode=0o600, dir_mode=0o700):
    """fsync ``temp`` (a file, or a directory tree such as pg_dump's directory format),
    set its permissions, rename it to ``final_path`` and fsync the parent directory.
    The rename is the commit point."""
    if os.path.isdir(temp):
        for root, _dirs, files in os.walk(temp):
            for name in files:
                _fsync_path(os.path.join(root, name))
                os.chmod(os.path.join(root, name), mode)
            os.chmod(root, dir_mode)
            fsync_dir(root)
    else:
        _fsync_path(temp)
        os.chmod(temp, mode)
    os.rename(temp, final_path)
    fsync_dir(os.path.dirname(os.path.abspath(final_path)))


def _fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def discard(path):
    """Remove a temporary file or directory; missing is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def atomic_path(final_path, mode=0o600, dir_mode=0o700):
    """Yield a temporary path beside ``final_path`` for a tool (pg_dump -f, cp ...) to fill.

    The path exists as an empty file; a tool that writes a directory may remove it first.
    On normal exit the temp is committed under ``final_path``; on any exception it is
    removed and the exception propagates, so the final name never holds a partial file.
    """
    temp = temp_path(final_path)
    try:
        yield temp
        commit(temp, final_path, mode, dir_mode)
    except BaseException:
        discard(temp)
        raise


def atomic_write_bytes(final_path, data, mode=0o600):
    with atomic_path(final_path, mode) as temp:
        with open(temp, 'wb') as handle:
            handle.write(data)


def atomic_write_json(final_path, obj, mode=0o600):
    data = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + '\n'
    atomic_write_bytes(final_path, data.encode('utf-8'), mode)


def copy_hashed(source, target, size=None):
    """Copy the open binary file ``source`` to the open binary file ``target`` in chunks,
    hashing the bytes as they pass; return ``(sha256, bytes copied)``. With ``size`` at
    most that many bytes are read (the caller compares the count: a short stream).

    The one hash-while-copy of the collection: artifacts, received streams and shipped
    files are hashed from the bytes actually written, never by reading the copy again.
    """
    digest = hashlib.sha256()
    copied = 0
    while size is None or copied < size:
        chunk = source.read(CHUNK if size is None else min(CHUNK, size - copied))
        if not chunk:
            break
        digest.update(chunk)
        target.write(chunk)
        copied += len(chunk)
    return digest.hexdigest(), copied


def copy_hashed_to(source, path):
    """Copy the open binary file ``source`` to a new file at ``path`` (see
    :func:`copy_hashed`); the caller commits or discards ``path``."""
    with open(path, 'wb') as target:
        return copy_hashed(source, target)


def durable_copy(src, final_path, mode=0o600):
    """Copy ``src`` to ``final_path`` durably; return ``(sha256, size)`` of what was written.

    The hash is computed from the bytes as they are written, so a caller can compare it
    with the source's recorded hash without reading the copy again.
    """
    with atomic_path(final_path, mode) as temp:
        with open(src, 'rb') as source:
            result = copy_hashed_to(source, temp)
    return result


def temps_of(final_name):
    """The pattern of exactly the temporaries ``temp_path`` makes for ``final_name``
    (never another file's: ``worb`` must not match ``worb.json``'s)."""
    return re.compile(r'\A%s%s\.[A-Za-z0-9_]+\Z' % (re.escape(TEMP_PREFIX), re.escape(final_name)))


def remove_stale_temps(directory, pattern=None):
    """Remove temporaries a killed run left in ``directory``: every ``TEMP_PREFIX`` name,
    or only those matching the compiled ``pattern`` (see ``temps_of``). Call only while
    holding the lock of the job that writes them. Returns the names."""
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in sorted(os.listdir(directory)):
        if pattern.match(name) if pattern is not None else name.startswith(TEMP_PREFIX):
            discard(os.path.join(directory, name))
            removed.append(name)
    if removed:
        fsync_dir(directory)
    return removed
