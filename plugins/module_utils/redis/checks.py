# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""redis-check-rdb and redis-check-aof, and the checks of a stored snapshot against its
manifest entry (size, sha256, then the tool)."""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import tempfile

from ansible_collections.codeb.backup.plugins.module_utils import durable, naming, process
from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError, BackupError
from ansible_collections.codeb.backup.plugins.module_utils.manifest import check_artifact
from ansible_collections.codeb.backup.plugins.module_utils.redis.options import AOF_TAR_DIR


# Only an ArtifactError says a snapshot is bad: its sha256 or size differs from the
# manifest, or redis-check-rdb / redis-check-aof ran and rejected it. A missing tool, a
# tool killed by a signal, an unreadable file or a full scratch disk is a BackupError: the
# run fails and no snapshot's status changes.

_KEYS_RE = re.compile(r'\[info\] (\d+) keys read')
_EXPIRES_RE = re.compile(r'\[info\] (\d+) expires')
_RDB_ERROR = '--- RDB ERROR DETECTED ---'
_TOOLS_HINT = 'install it (Debian: apt install redis-tools) or put it on PATH'


def _run_check(argv, what, input_data=None):
    try:
        proc = process.run(argv, what=what, check=False, input_data=input_data)
    except BackupError as exc:
        raise BackupError('%s: %s; nothing was checked, and no snapshot\'s status was changed'
                          % (exc.msg, _TOOLS_HINT), param='snapshot', tool=argv[0])
    return proc, (proc.stdout or '') + (proc.stderr or '')


def check_rdb(path, name=None):
    """Run redis-check-rdb on ``path``; return ``(keys, expires)``. Raise ArtifactError if
    the tool rejects the file, BackupError if it could not check it."""
    name = name or path
    proc, out = _run_check(['redis-check-rdb', path], 'redis-check-rdb')
    if proc.returncode == 0 and 'RDB looks OK' in out:
        keys = _KEYS_RE.search(out)
        expires = _EXPIRES_RE.search(out)
        return int(keys.group(1)) if keys else 0, int(expires.group(1)) if expires else 0
    if proc.returncode > 0 and _RDB_ERROR in out:
        raise ArtifactError('redis-check-rdb refused %s: %s' % (name, tail(out)),
                            param='snapshot', check_output=tail(out))
    raise _could_not_check('redis-check-rdb', name, proc, out)


def _aof_invalid(out):
    return 'not valid' in out or 'is not valid' in out


def check_aof(manifest_path, fix_truncated_tail=False, name=None):
    """Run redis-check-aof on a multi-part AOF manifest. A copy of a live AOF may end in
    the middle of the last command of the last INCR file; with ``fix_truncated_tail`` that
    tail (and only that) is cut off, as Redis itself does with ``aof-load-truncated yes``.
    Returns a note if a tail was cut. Raises ArtifactError if the tool rejects the set."""
    name = name or manifest_path
    directory = os.path.dirname(manifest_path)
    _data, names = read_aof_manifest(manifest_path, artifact=name)
    missing = [n for n in names if not os.path.isfile(os.path.join(directory, n))]
    if missing:
        raise ArtifactError('%s is incomplete: its AOF manifest names %s, which it does not hold'
                            % (name, ', '.join(missing)), param='snapshot')
    proc, out = _run_check(['redis-check-aof', manifest_path], 'redis-check-aof')
    if proc.returncode == 0 and 'valid' in out and not _aof_invalid(out):
        return None
    if proc.returncode > 0 and fix_truncated_tail and 'truncated' in out.lower():
        fixed, _out = _run_check(['redis-check-aof', '--fix', manifest_path],
                                 'redis-check-aof --fix', input_data='y\n')
        again, _out = _run_check(['redis-check-aof', manifest_path], 'redis-check-aof')
        if again.returncode == 0:
            return 'cut a truncated last command from the copied INCR file: %s' % tail(
                fixed.stdout, 300)
    if proc.returncode > 0 and (_aof_invalid(out) or 'truncated' in out.lower()):
        raise ArtifactError('redis-check-aof refused %s: %s' % (name, tail(out)),
                            param='snapshot', check_output=tail(out))
    raise _could_not_check('redis-check-aof', name, proc, out)


def _could_not_check(tool, name, proc, out):
    """The tool ran but gave no verdict (killed, crashed, unexpected output): not evidence."""
    return BackupError('%s could not check %s (exit %s): %s; this says nothing about the '
                       'snapshot, whose status is unchanged'
                       % (tool, name, proc.returncode, tail(out) or 'no output'),
                       param='snapshot', check_output=tail(out))


def tail(text, limit=1500):
    return (text or '').strip()[-limit:]


def read_aof_manifest(path, artifact=None):
    """Parse a Redis 7 AOF manifest; return ``(bytes, [file names])``. With ``artifact``
    (the snapshot it came from) a bad manifest is evidence against that snapshot."""
    error = ArtifactError if artifact else BackupError
    where = '%s (in %s)' % (os.path.basename(path), artifact) if artifact else path
    with open(path, 'rb') as handle:
        data = handle.read()
    names = []
    for line in data.decode('utf-8', 'replace').splitlines():
        fields = line.split()
        if not fields:
            continue
        pairs = dict(zip(fields[0::2], fields[1::2]))
        name = pairs.get('file')
        if not name or '/' in name or name in ('.', '..'):
            raise error('unexpected line in AOF manifest %s: %r' % (where, line),
                        param='snapshot' if artifact else None)
        names.append(name)
    if not names:
        raise error('AOF manifest %s names no files' % where,
                    param='snapshot' if artifact else None)
    return data, names


def verify_artifact(backup_dir, entry, work_dir=None):
    """sha256 and size against the manifest, then the Redis check tool. For an AOF tar,
    extract into a temp dir in ``work_dir`` (caller removes it) and return its path.
    Raises ArtifactError only on evidence against the snapshot, BackupError otherwise."""
    path = os.path.join(backup_dir, naming.validate_file_name('file', entry['file']))
    if os.path.isdir(path) and not os.path.islink(path):
        raise ArtifactError('snapshot %s is not a regular file' % path, param='snapshot')
    check_artifact(path, entry, param='snapshot')
    if entry['kind'] == 'rdb':
        check_rdb(path)
        return None
    return check_aof_tar(path, work_dir)


def check_aof_tar(path, work_dir):
    """Extract an AOF snapshot tar into a temp dir in ``work_dir`` and check the set with
    redis-check-aof; return the dir (the caller removes it)."""
    extract = tempfile.mkdtemp(prefix=durable.TEMP_PREFIX + 'restore-', dir=work_dir)
    try:
        try:
            tar = tarfile.open(path)
        except tarfile.TarError as exc:
            raise ArtifactError('%s is not a readable tar file: %s' % (path, exc), param='snapshot')
        with tar:
            try:
                members = tar.getmembers()
            except tarfile.TarError as exc:
                raise ArtifactError('%s is a damaged tar file: %s' % (path, exc), param='snapshot')
            for member in members:
                parts = member.name.split('/')
                if (not member.isfile() or len(parts) != 2 or parts[0] != AOF_TAR_DIR
                        or parts[1] in ('', '.', '..')):
                    raise ArtifactError('unexpected member %r in %s' % (member.name, path),
                                        param='snapshot')
                with tar.extractfile(member) as src, \
                        open(os.path.join(extract, parts[1]), 'wb') as dst:
                    shutil.copyfileobj(src, dst, durable.CHUNK)
        manifests = [n for n in os.listdir(extract) if n.endswith('.manifest')]
        if len(manifests) != 1:
            raise ArtifactError('%s holds %d AOF manifests, expected 1' % (path, len(manifests)),
                                param='snapshot')
        check_aof(os.path.join(extract, manifests[0]), name=path)
    except BaseException:
        shutil.rmtree(extract, ignore_errors=True)
        raise
    return extract
