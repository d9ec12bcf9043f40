# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Validation of user-supplied names and the UTC timestamp format of artifact names."""

from __future__ import annotations

import datetime
import re

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError

# A name becomes one path component: it must not contain '/', must not be '.' or '..',
# and must not start with '-' or '.', so it can never escape its directory, hide, or be
# read as a command-line option.
NAME_PATTERN = r'[A-Za-z0-9][A-Za-z0-9_.-]*'
NAME_MAX = 63  # PostgreSQL's identifier limit; plenty for projects and environments
_NAME_RE = re.compile(r'\A' + NAME_PATTERN + r'\Z')

TIMESTAMP_FORMAT = '%Y-%m-%dT%H:%M:%S'
TIMESTAMP_PATTERN = r'\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}'
_TIMESTAMP_RE = re.compile(r'\A' + TIMESTAMP_PATTERN + r'\Z')
# A point-in-time recovery target: ``YYYY-MM-DD HH:MM:SS[.ffffff]`` with an optional zone
# (``Z``, ``UTC``, ``+HH``, ``+HH:MM``); groups: day, clock, fraction, zone.
TARGET_TIME_RE = re.compile(
    r'\A(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d{1,6})?'
    r'\s*(Z|UTC|[+-]\d{2}(?::?\d{2})?)?\Z')
# An artifact's file name as recorded in a manifest: one plain component of its directory.
_FILE_NAME_RE = re.compile(r'\A[A-Za-z0-9_][A-Za-z0-9_.:+-]*\Z')
FILE_NAME_MAX = 255


def validate_name(param, value):
    """Return ``value`` if it is a safe single path component, else raise BackupError."""
    if not isinstance(value, str) or not value:
        raise BackupError('%s must be a non-empty name; got %r' % (param, value), param=param)
    if len(value) > NAME_MAX:
        raise BackupError('%s is %d characters long; at most %d are allowed'
                          % (param, len(value), NAME_MAX), param=param)
    if not _NAME_RE.match(value):
        raise BackupError(
            '%s %r is not allowed: use letters, digits, "_", "-" and "." only, starting with a '
            'letter or digit (no "/", no "..")' % (param, value), param=param)
    return value


def validate_file_name(param, value):
    """Return ``value`` if it is one plain file name (no directory part, not hidden, no
    ``..``), else raise. Every name read from a manifest or a request passes here before
    it is opened, renamed or deleted, so a tampered manifest cannot reach outside its
    directory."""
    if not isinstance(value, str) or not value or len(value) > FILE_NAME_MAX \
            or not _FILE_NAME_RE.match(value) or '..' in value:
        raise BackupError('%s must be a plain file name inside its directory (letters, digits, '
                          '"_ . : + -", no "/" or ".."); got %r' % (param, value), param=param)
    return value


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def format_timestamp(moment=None):
    """``YYYY-MM-DDTHH:MM:SS`` in UTC, the timestamp used in every artifact name."""
    moment = moment or utcnow()
    return moment.astimezone(datetime.timezone.utc).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(param, value):
    """Parse a ``YYYY-MM-DDTHH:MM:SS`` UTC timestamp, naming ``param`` on error."""
    if not isinstance(value, str) or not _TIMESTAMP_RE.match(value):
        raise BackupError('%s must be a UTC timestamp like 2026-01-07T10:30:00; got %r'
                          % (param, value), param=param)
    try:
        parsed = datetime.datetime.strptime(value, TIMESTAMP_FORMAT)
    except ValueError as exc:
        raise BackupError('%s %r is not a valid time: %s' % (param, value, exc), param=param)
    return parsed.replace(tzinfo=datetime.timezone.utc)


def unique_timestamp(taken, moment=None):
    """A timestamp not in ``taken``: bumps by whole seconds, so two runs within one second
    still get distinct, correctly ordered names."""
    moment = moment or utcnow()
    stamp = format_timestamp(moment)
    while stamp in taken:
        moment = moment + datetime.timedelta(seconds=1)
        stamp = format_timestamp(moment)
    return stamp


# Versions and snapshot names recorded in the blue-green slot state are single path
# components too, but may hold the ":" of a UTC timestamp (worb-2026-01-07T10:00:00.dump)
# or the "+" of a build tag.
_REF_RE = re.compile(r'\A[A-Za-z0-9][A-Za-z0-9_.:+-]*\Z')
REF_MAX = 255
# One version file of the env store: its UTC timestamp and ".env".
ENV_VERSION_FILE_RE = re.compile(r'\A(%s)\.env\Z' % TIMESTAMP_PATTERN)
# A sha256 as every manifest records it: 64 lowercase hex digits.
SHA256_RE = re.compile(r'\A[0-9a-f]{64}\Z')


def validate_ref(param, value):
    """Return ``value`` if it is a safe version or snapshot name, else raise BackupError."""
    if not isinstance(value, str) or not value:
        raise BackupError('%s must be a non-empty name; got %r' % (param, value), param=param)
    if len(value) > REF_MAX or not _REF_RE.match(value) or '..' in value:
        raise BackupError(
            '%s %r is not allowed: use letters, digits, "_", "-", ".", ":" and "+" only, '
            'starting with a letter or digit, at most %d characters (no "/", no "..")'
            % (param, value, REF_MAX), param=param)
    return value


def is_timestamp(value):
    """True if ``value`` has the ``YYYY-MM-DDTHH:MM:SS`` form of an artifact timestamp."""
    return isinstance(value, str) and bool(_TIMESTAMP_RE.match(value))


def artifact_re(prefix, suffix):
    """The artifact names ``{prefix}{timestamp}{suffix}``; group 1 is the timestamp."""
    return re.compile(r'\A%s(%s)%s\Z' % (re.escape(prefix), TIMESTAMP_PATTERN, re.escape(suffix)))
