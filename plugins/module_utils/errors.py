# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors raised by the codeb.backup core.

Modules turn a BackupError into ``fail_json(msg=..., param=...)``; the host CLI prints it
and exits non-zero. ``param`` names the offending parameter so the operator knows what
to fix.
"""

from __future__ import annotations


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


class LockTimeout(BackupError):
    """Another run of the same job holds the lock."""
