# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Errors of the status API."""

from __future__ import annotations

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError


class FactsUnavailable(BackupError):
    """The metrics source (Prometheus) could not answer."""
