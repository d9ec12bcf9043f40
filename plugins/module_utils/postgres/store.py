# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The snapshot store of one ``backup_dir``: file names, the manifest's entries, the checks
of one archive (sha256, ``pg_restore --list``) and retention.

Layout: ``{backup_dir}/{db}-{YYYY-MM-DDTHH:MM:SS}.dump`` (custom format, gzip or none;
a directory for format ``directory``) or ``...dump.zst`` (custom format, uncompressed by
pg_dump and compressed by ``zstd``: PostgreSQL 15's pg_dump only knows gzip), each
recorded in ``{backup_dir}/manifest.json`` with its sha256, size and row counts.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import subprocess

from ansible_collections.codeb.backup.plugins.module_utils import durable, naming, process
from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError, BackupError
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock
from ansible_collections.codeb.backup.plugins.module_utils.manifest import Manifest, check_artifact
from ansible_collections.codeb.backup.plugins.module_utils.postgres.options import (
    DEFAULT_BACKUP_DIR, KIND)
from ansible_collections.codeb.backup.plugins.module_utils.retention import is_good, plan_retention

DELETING = 'deleting'  # a prune's intent, recorded before it unlinks
_SYSTEM_SCHEMAS = "('pg_catalog', 'information_schema')"

# One query counting every user table's rows, inside whatever snapshot the session uses:
# the snapshot records these counts and a restore compares them.
ROW_COUNT_SQL = (
    "SELECT format('%I.%I', n.nspname, c.relname) || '|' || "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', "
    "n.nspname, c.relname), false, true, '')))[1]::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname NOT IN " + _SYSTEM_SCHEMAS + " "
    "AND n.nspname !~ '^pg_(toast|temp_)' "
    "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
    "AND d.objid = c.oid AND d.deptype = 'e') "
    "ORDER BY 1")
LARGE_OBJECT_SQL = 'SELECT count(*) FROM pg_largeobject_metadata'


def parse_counts(lines):
    """``ROW_COUNT_SQL``'s output lines as ``{table: rows}``."""
    counts = {}
    for line in lines:
        name, _sep, count = line.rpartition('|')
        counts[name] = int(count)
    return counts


# --------------------------------------------------------------------------- names

def snapshot_name(database, stamp, method):
    return '%s-%s.dump%s' % (database, stamp, '.zst' if method == 'zstd' else '')


def name_re(database):
    """Matches ``database``'s snapshot file names; group 1 is the timestamp."""
    return re.compile(r'\A%s-(%s)\.dump(\.zst)?\Z' % (re.escape(database),
                                                      naming.TIMESTAMP_PATTERN))


def _temp_re(database):
    return re.compile(r'\A%s%s-%s\.dump' % (re.escape(durable.TEMP_PREFIX), re.escape(database),
                                            naming.TIMESTAMP_PATTERN))


def remove_stale(backup_dir, database):
    """Remove the temporaries a killed run of ``database`` left (call under its lock)."""
    return durable.remove_stale_temps(backup_dir, pattern=_temp_re(database))


def lock_path(backup_dir, database):
    return os.path.join(backup_dir, '.pg_snapshot-%s.lock' % database)


def locked(p, database):
    """The lock every job of ``database`` in ``p['backup_dir']`` holds while it writes."""
    return job_lock(lock_path(p['backup_dir'], database), 'pg_snapshot of database %s' % database,
                    wait=p['lock_timeout'])


def restore_marker_path(backup_dir, database):
    """Written (durably) before a restore into ``database`` creates its temporary database,
    removed once ``database`` is open again and nothing of the restore is left: a marker
    left behind means a killed restore may have closed it or left databases behind."""
    return os.path.join(backup_dir, '.pg_snapshot-%s.restore' % database)


# --------------------------------------------------------------------------- listing

def entries_for(manifest, database=None):
    """The snapshot entries of ``database`` (all databases for None), oldest first."""
    return [e for e in manifest.entries()
            if e.get('kind') == KIND and (database is None or e.get('database') == database)]


def list_snapshots(backup_dir=DEFAULT_BACKUP_DIR, database=None):
    """Snapshots recorded in the manifest, newest first, with their verification state."""
    if database is not None:
        naming.validate_name('database', database)
    if not os.path.isdir(backup_dir):
        return []
    result = []
    for entry in reversed(entries_for(Manifest(backup_dir), database)):
        path = os.path.join(backup_dir, entry['file'])
        result.append(dict(
            file=entry['file'], path=path, database=entry.get('database'), time=entry['time'],
            size_bytes=entry.get('size_bytes'), sha256=entry.get('sha256'),
            status=entry.get('status', 'ok'), verified=entry.get('status', 'ok') == 'ok',
            verified_at=entry.get('verified_at'), format=entry.get('format'),
            compression=entry.get('compression'), server_version=entry.get('server_version'),
            duration_seconds=entry.get('duration_seconds'), exists=os.path.exists(path),
            tables=len(entry.get('tables') or {}), large_objects=entry.get('large_objects', 0)))
    return result


def select_entry(backup_dir, database, snapshot=None, good_only=True):
    """The manifest entry named by ``snapshot`` (file name or timestamp), or the latest
    (good) one of ``database``."""
    entries = entries_for(Manifest(backup_dir), database)
    if snapshot in (None, '', 'latest'):
        candidates = [e for e in entries if is_good(e)] if good_only else entries
        if not candidates:
            raise BackupError('no %ssnapshot of database %r in %s' % (
                'good ' if good_only else '', database, backup_dir), param='snapshot')
        return candidates[-1]
    if not isinstance(snapshot, str) or '/' in snapshot or snapshot.startswith('.'):
        raise BackupError('snapshot must be "latest", a snapshot file name or its timestamp '
                          '(YYYY-MM-DDTHH:MM:SS); got %r' % (snapshot,), param='snapshot')
    for entry in entries:
        if snapshot in (entry['file'], entry['time']):
            return entry
    raise BackupError('snapshot %r of database %r is not in the manifest of %s; known: %s' % (
        snapshot, database, backup_dir, ', '.join(e['time'] for e in entries[-5:]) or 'none'),
        param='snapshot')


# --------------------------------------------------------------------------- checks

def artifact_sha256(path):
    """sha256 of a file, or of a directory tree (hash of the sorted 'name sha256' lines)."""
    if not os.path.isdir(path):
        return durable.sha256_file(path)
    digest = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        digest.update(('%s %s\n' % (name, durable.sha256_file(os.path.join(path, name))))
                      .encode())
    return digest.hexdigest()


def artifact_size(path):
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path))


# pg_restore messages that are about pg_restore itself (too old for the archive), not
# evidence against the archive.
_TOOL_PROBLEMS = ('unsupported version', 'out of memory', 'could not open input file')


def check_archive(conn, path, method, database=None, full=True):
    """``pg_restore --list`` the archive (after ``zstd -t`` for zstd when ``full``); return
    ``(toc_entries, header)``. Raises ArtifactError when the archive itself is rejected
    (unreadable, empty, of another database) and a plain BackupError when a tool is
    missing or cannot judge it, so only evidence marks a snapshot bad.

    pg_restore runs as this process, not as ``os_user``: it only reads the file, which
    lives in the job's private ``backup_dir``."""
    pg_restore = conn.tool('pg_restore')
    if method == 'zstd':
        zstd = zstd_path()
        test = process.run([zstd, '-q', '-t', path], check=False) if full else None
        if test is not None and test.returncode != 0:
            raise ArtifactError('zstd integrity test of %s failed: %s'
                                % (path, test.stderr.strip()))
        unzstd = process.spawn([zstd, '-q', '-dc', path], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL,
                               preexec_fn=process.die_with_parent)
        try:
            listing = process.run([pg_restore, '--list'], stdin=unzstd.stdout, check=False)
        finally:
            unzstd.stdout.close()
            unzstd.kill()  # pg_restore --list reads only the TOC at the head of the stream
            unzstd.wait()
    else:
        listing = process.run([pg_restore, '--list', path], check=False)
    if listing.returncode != 0:
        error = listing.stderr.strip()
        if any(text in error for text in _TOOL_PROBLEMS):
            raise BackupError('pg_restore %s cannot read %s: %s (the snapshot was not judged)'
                              % (pg_restore, path, error), param='pg_bin_dir')
        raise ArtifactError('pg_restore --list of %s failed: %s' % (path, error))
    header = dict(re.findall(r'^;\s+(dbname|Compression|Format): (.*)$', listing.stdout, re.M))
    toc = [line for line in listing.stdout.splitlines() if line and not line.startswith(';')]
    if 'dbname' not in header:
        raise ArtifactError('%s is not a pg_dump archive (no TOC header)' % path)
    if database is not None and header['dbname'] != database:
        raise ArtifactError('%s holds database %r, not %r' % (path, header['dbname'], database))
    return len(toc), header


def zstd_path():
    """The zstd program, or an error naming ``compression``."""
    path = shutil.which('zstd')
    if path:
        return path
    raise BackupError('zstd is not installed (needed to read and write .dump.zst snapshots); '
                      'install the zstd package', param='compression')


def verify_entry(conn, backup_dir, entry, full=True):
    """Re-check one snapshot: sha256 against the manifest, then the archive itself.
    Returns a report dict (``ok`` True/False, ``error``)."""
    path = os.path.join(backup_dir, entry['file'])
    method = (entry.get('compression') or 'none').split(':')[0]
    report = dict(file=entry['file'], path=path, time=entry['time'], sha256=entry.get('sha256'),
                  size_bytes=entry.get('size_bytes'), ok=False, sha256_ok=False, list_ok=False)
    try:
        report['actual_sha256'] = check_checksum(backup_dir, entry)
        report['sha256_ok'] = True
        report['toc_entries'] = check_archive(conn, path, method, entry.get('database'),
                                              full)[0]
    except ArtifactError as exc:  # anything else is not about this snapshot: it propagates
        report['error'] = exc.msg
        return report
    report['list_ok'] = report['ok'] = True
    return report


def check_checksum(backup_dir, entry):
    """The artifact's sha256, or ArtifactError when it is missing or differs from the
    manifest. (An unreadable disk raises OSError: no evidence about the artifact.)"""
    return check_artifact(os.path.join(backup_dir, entry['file']), entry, digest=artifact_sha256)


# --------------------------------------------------------------------------- retention

def pruned_result(delete):
    """What a prune reports for each deleted (or, in check mode, condemned) snapshot: the
    same shape in every state."""
    return [dict(file=e['file'], time=e['time'], reason=e['reason']) for e in delete]


def plan_prune(p, now=None, extra_newest=False, fresh=(), record=False):
    """``(delete, condemned)``. Before anything older is deleted, the snapshots retention
    would keep as the newest ``keep_min`` good ones are checked against their sha256; one
    that fails is ``condemned`` (no longer counted as good, marked in the manifest when
    ``record``) and the plan is made again, so a silently corrupted newest snapshot never
    lets a good older one go. ``fresh`` names snapshots hashed by this very run."""
    if not os.path.isdir(p['backup_dir']):
        return [], []
    manifest = Manifest(p['backup_dir'])
    entries = entries_for(manifest, p['database'])
    if extra_newest:  # check mode of present: the snapshot about to be made counts as newest
        entries = entries + [dict(file='(new)', time=naming.format_timestamp(now), status='ok')]
    condemned, checked = [], set(fresh) | {'(new)'}
    while True:
        keep, delete = plan_retention(entries, now or naming.utcnow(),
                                      max_age=datetime.timedelta(days=p['keep_days']),
                                      keep_min=p['keep_min'])
        if not delete:
            return delete, condemned
        protected = [e for e in keep if is_good(e)][:p['keep_min']]
        bad = []
        for entry in protected:
            if entry['file'] in checked:
                continue
            checked.add(entry['file'])
            try:
                check_checksum(p['backup_dir'], entry)
            except ArtifactError as exc:
                bad.append(dict(file=entry['file'], error=exc.msg))
                entry['status'] = 'failed_verification'
        if not bad:
            return delete, condemned
        condemned += bad
        if record:
            with manifest.update() as recorded:
                for item in bad:
                    if item['file'] in recorded:
                        recorded[item['file']].update(status='failed_verification',
                                                      verification_error=item['error'],
                                                      verified_at=naming.format_timestamp())


def prune_locked(p, now=None, fresh=()):
    """Delete what retention allows, as a recorded intent: mark the entries ``deleting``,
    unlink the files, drop the entries. A prune killed in between is finished by the next
    run's reconcile; no entry ever counts as good while its file is being removed."""
    delete, condemned = plan_prune(p, now, fresh=fresh, record=True)
    if not delete:
        return [], condemned
    manifest = Manifest(p['backup_dir'])
    names = sorted(set(e['file'] for e in delete))
    with manifest.update() as entries:
        for name in names:
            if name in entries:
                entries[name]['status'] = DELETING
    for name in names:
        durable.discard(os.path.join(p['backup_dir'], name))
    durable.fsync_dir(p['backup_dir'])
    with manifest.update() as entries:
        for name in names:
            entries.pop(name, None)
    return delete, condemned
