# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pgBackRest facts from ``pgbackrest info --output=json`` (and optionally ``check``).

The meanings follow the community pgbackrest_exporter under our prefix: the stanza's and
the repository's status codes (0 ok), the stop time of the newest backup satisfying a
type (full: newest full; diff: newest full or diff; incr: newest of any type, the
exporter's ``since_last_completion`` meaning), the sizes and duration of the newest
backup of exactly each type, the archived WAL range, and the stanza's size in the
repository (``pgbackrest repo-ls``, so it works for any repository type and never needs
the repository path). pgBackRest runs as the repository's OS user, the way every other
pgBackRest call of the collection does (``postgres.pgbackrest.pgbackrest``).
"""

from __future__ import annotations

import json
import re
import time

from ansible_collections.codeb.backup.plugins.module_utils import naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.postgres import pgbackrest as pb

SOURCE = 'pgbackrest'
BACKUP_TYPES = pb.BACKUP_TYPES
# Which backup types satisfy "the last <type> backup": a full backup is also the newest
# diff or incr, a diff also the newest incr.
SATISFIES = {'full': ('full',), 'diff': ('full', 'diff'), 'incr': ('full', 'diff', 'incr')}
# PostgreSQL's default WAL segment size (initdb --wal-segsize); pgBackRest's info does not
# report the cluster's, and every cluster the roles create uses the default.
WAL_SEGMENT_SIZE = 16 * 1024 * 1024
_WAL_NAME = re.compile(r'^[0-9A-F]{24}$')

METRICS = {
    'pgbackrest_stanza_status': 'gauge:pgBackRest stanza status code (0 ok).',
    'pgbackrest_repo_status': 'gauge:Worst pgBackRest repository status code of the stanza (0 ok).',
    'pgbackrest_check_status': 'gauge:Exit code of the last pgbackrest check (0 ok).',
    'pgbackrest_check_timestamp_seconds': 'gauge:Unix time of the last pgbackrest check.',
    'pgbackrest_last_backup_timestamp_seconds':
        'gauge:Stop time of the newest backup satisfying the type (full; full or diff; any).',
    'pgbackrest_backup_size_bytes': 'gauge:Database size of the newest backup of exactly the type.',
    'pgbackrest_backup_repo_size_bytes':
        'gauge:Repository size of the newest backup of exactly the type (all files it needs).',
    'pgbackrest_backup_duration_seconds': 'gauge:Duration of the newest backup of exactly the type.',
    'pgbackrest_backups': 'gauge:Number of backups of the type in the repository.',
    'pgbackrest_wal_archive_status': 'gauge:1, labelled with the oldest and newest archived WAL segment.',
    'pgbackrest_wal_max_position_bytes': 'gauge:Start position (LSN) of the newest archived WAL segment.',
    'pgbackrest_repo_size_bytes': 'gauge:Bytes of the stanza under backup/ and archive/ in the repository.',
}
CHECK_METRICS = ('pgbackrest_check_status', 'pgbackrest_check_timestamp_seconds')


def wal_segment_position(name, segment_size=WAL_SEGMENT_SIZE):
    """The start LSN, as bytes, of WAL segment ``name`` (``TTTTTTTTXXXXXXXXYYYYYYYY``:
    timeline, then the high 32 bits of the LSN, then the segment number within them)."""
    if not isinstance(name, str) or not _WAL_NAME.match(name):
        raise ValueError('not a WAL segment name: %r' % (name,))
    return (int(name[8:16], 16) << 32) + int(name[16:24], 16) * segment_size


def _code(entry):
    return (entry.get('status') or {}).get('code')


def stanza_samples(entry, repo_size=None):
    """The samples ``(metric, labels, value)`` of one stanza's ``pgbackrest info`` entry."""
    stanza = entry.get('name')
    label = dict(stanza=stanza)
    samples = []
    if _code(entry) is not None:
        samples.append(('pgbackrest_stanza_status', label, _code(entry)))
    repo_codes = [_code(repo) for repo in entry.get('repo') or [] if _code(repo) is not None]
    if repo_codes:
        samples.append(('pgbackrest_repo_status', label, max(repo_codes)))
    backups = entry.get('backup') or []  # pgBackRest lists the oldest first
    for backup_type in BACKUP_TYPES:
        typed = dict(stanza=stanza, backup_type=backup_type)
        satisfying = [b for b in backups if b.get('type') in SATISFIES[backup_type]]
        if satisfying:
            stop = max(int(b['timestamp']['stop']) for b in satisfying)
            samples.append(('pgbackrest_last_backup_timestamp_seconds', typed, stop))
        exact = [b for b in backups if b.get('type') == backup_type]
        samples.append(('pgbackrest_backups', typed, len(exact)))
        if exact:
            newest = max(exact, key=lambda b: int(b['timestamp']['stop']))
            info = newest.get('info') or {}
            samples.append(('pgbackrest_backup_size_bytes', typed, int(info.get('size', 0))))
            samples.append(('pgbackrest_backup_repo_size_bytes', typed,
                            int((info.get('repository') or {}).get('size', 0))))
            samples.append(('pgbackrest_backup_duration_seconds', typed,
                            int(newest['timestamp']['stop']) - int(newest['timestamp']['start'])))
    archives = [a for a in entry.get('archive') or [] if a.get('min') and a.get('max')]
    if archives:
        wal_min = min(a['min'] for a in archives)
        wal_max = max(a['max'] for a in archives)
        samples.append(('pgbackrest_wal_archive_status',
                        dict(stanza=stanza, wal_min=wal_min, wal_max=wal_max), 1))
        samples.append(('pgbackrest_wal_max_position_bytes', label, wal_segment_position(wal_max)))
    if repo_size is not None:
        samples.append(('pgbackrest_repo_size_bytes', label, repo_size))
    return samples


def repo_size(stanza, repo_user, config):
    """Bytes of the files of ``stanza`` under the repository's backup/ and archive/."""
    total = 0
    for top in ('backup', 'archive'):
        # the path is repo-ls's argument, after the command (pb.pgbackrest puts the
        # command last)
        argv = ['pgbackrest'] + (['--config=%s' % config] if config else []) + [
            'repo-ls', '--output=json', '--recurse', '%s/%s' % (top, stanza)]
        proc = pb.run_as(repo_user, argv, 'pgbackrest_repo_user',
                         what='pgbackrest repo-ls %s/%s' % (top, stanza))
        try:
            listing = json.loads(proc.stdout or '{}')
        except ValueError:
            raise BackupError('pgbackrest repo-ls did not return JSON: %s' % proc.stdout[:200])
        total += sum(int(item.get('size', 0)) for item in listing.values()
                     if item.get('type') == 'file')
    return total


def stanza_info(stanza, repo_user, config):
    """The ``pgbackrest info`` entry of ``stanza`` (pgBackRest reports an unknown stanza
    itself, with status code 1 "missing stanza path")."""
    proc = pb.pgbackrest('info', stanza, repo_user, config, ['--output=json'])
    try:
        entries = json.loads(proc.stdout or '[]')
    except ValueError:
        raise BackupError('pgbackrest info did not return JSON: %s' % proc.stdout[:200])
    for entry in entries:
        if entry.get('name') == stanza:
            return entry
    raise BackupError('pgbackrest info --stanza=%s returned no entry for it' % stanza,
                      param='pgbackrest_stanza')


def check(stanza, repo_user, config, now=None):
    """Run ``pgbackrest check``; return its samples (exit code and time)."""
    proc = pb.pgbackrest('check', stanza, repo_user, config, check=False)
    label = dict(stanza=stanza)
    return [('pgbackrest_check_status', label, proc.returncode),
            ('pgbackrest_check_timestamp_seconds', label, time.time() if now is None else now)]


def collect(stanzas, repo_user=pb.DEFAULT_REPO_USER, config=None, run_check=False):
    """Samples of every stanza in ``stanzas``. A stanza that is not ok is a fact (its
    status code); pgBackRest that cannot run or answer raises a BackupError."""
    for stanza in stanzas:
        naming.validate_name('pgbackrest_stanza', stanza)
    pb.check_setup(repo_user, 'pgbackrest_repo_user', config)
    samples = []
    for stanza in stanzas:
        entry = stanza_info(stanza, repo_user, config)
        size = repo_size(stanza, repo_user, config) if _code(entry) not in pb.ABSENT_CODES \
            else None
        samples.extend(stanza_samples(entry, size))
        if run_check:
            samples.extend(check(stanza, repo_user, config))
    return samples
