# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors raised by the codeb.backup core.

Modules turn a BackupError into ``fail_json(msg=..., param=...)``; the host CLI prints it
and exits non-zero. ``param`` names the offending parameter so the operator knows what
to fix.

Only an ``ArtifactError`` is evidence that an artifact itself is bad (its sha256 or size
differs from its manifest, or its format's own check rejects it). Any other error (a
missing tool, a full or read-only disk, an unreachable server) fails the run and must
never change what is recorded about an artifact.
"""

from __future__ import annotations

import errno


class BackupError(Exception):
    """A failure an operator can act on. ``param`` names the bad parameter, if any."""

    def __init__(self, msg, param=None, **details):
        super().__init__(msg)
        self.msg = msg
        self.param = param
        self.details = details

    def as_result(self):
        """Keyword arguments for AnsibleModule.fail_json."""
        result = dict(msg=self.msg)
        if self.param:
            result['param'] = self.param
        result.update(self.details)
        return result


class ArtifactError(BackupError):
    """Evidence that an artifact is damaged; the only error that may mark it bad."""


class LockTimeout(BackupError):
    """Another run of the same job holds the lock."""


_OS_HINTS = {
    errno.ENOSPC: 'the filesystem is full: free space there',
    errno.EDQUOT: 'the disk quota is exhausted: free space there',
    errno.EROFS: 'the filesystem is read-only: remount it read-write or choose another directory',
    errno.EACCES: 'permission denied: check the owner and mode of the path',
    errno.EPERM: 'operation not permitted: check the owner and mode of the path',
    errno.EIO: 'an I/O error: check the disk (dmesg)',
}


def as_backup_error(exc, what, param=None):
    """Any exception as a BackupError that says what failed and, for OS errors, what to do."""
    if isinstance(exc, BackupError):
        return exc
    if isinstance(exc, OSError):
        where = ' (%s)' % exc.filename if exc.filename else ''
        hint = _OS_HINTS.get(exc.errno, exc.strerror or str(exc))
        return BackupError('%s failed%s: %s [%s]' % (what, where, hint,
                                                     errno.errorcode.get(exc.errno, exc.errno)),
                           param=param, errno=exc.errno)
    return BackupError('%s failed: %s: %s' % (what, type(exc).__name__, exc), param=param)
