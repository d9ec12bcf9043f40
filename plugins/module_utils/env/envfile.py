# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A ``.env`` parser and editor that round-trips byte for byte.

``parse(text)`` splits a file into lines (a quoted value may span several physical
lines); ``EnvFile.dump()`` concatenates their raw text, so ``parse(t).dump() == t`` for
*any* text, well-formed or not. Lines that are not assignments (comments, blank lines,
garbage) are kept verbatim and carry no key.

Grammar of an assignment (the common dotenv dialect of docker compose / python-dotenv):

- optional leading blanks, optional ``export `` prefix, a key
  ``[A-Za-z_][A-Za-z0-9_.]*``, optional blanks, ``=``, optional blanks, a value;
- ``'single'`` quoted: literal, may span lines, no escapes;
- ``"double"`` quoted: may span lines; escapes ``\\n \\r \\t \\" \\\\ \\$`` and a backslash
  before a newline (an escaped newline: the line continues, the newline is dropped);
  any other backslash is kept literally;
- unquoted: the rest of the line; blanks followed by ``#`` start a comment, trailing
  blanks are not part of the value; ``=`` inside a value is just a character;
- after a closing quote only blanks and an optional ``# comment`` may follow, otherwise
  the line is kept verbatim as ``invalid`` (it is never silently rewritten).

``EnvFile.set(key, value)`` rewrites only the line that defines ``key`` (its last
definition, the one that wins), keeping its ``export``, spacing, comment and, where the
value allows, its quoting style; every other line stays byte-identical. New keys are
appended. Bytes that are not UTF-8 survive via ``surrogateescape``.
"""

from __future__ import annotations

import re

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError

ENCODING = 'utf-8'
ERRORS = 'surrogateescape'

KEY_PATTERN = r'[A-Za-z_][A-Za-z0-9_.]*'
_KEY_RE = re.compile(r'\A' + KEY_PATTERN + r'\Z')
_ASSIGN_RE = re.compile(r'(?P<lead>\ufeff?[ \t]*(?:export[ \t]+)?)(?P<key>' + KEY_PATTERN
                        + r')(?P<eq>[ \t]*=)')
_COMMENT_RE = re.compile(r'[ \t]+#')
_TRAIL_RE = re.compile(r'\A[ \t]*(?:#.*)?\Z', re.S)
_BARE_SAFE_RE = re.compile(r'\A[A-Za-z0-9_./:@%+,=~^*!?-]*\Z')
_DQ_ESCAPES = {'n': '\n', 'r': '\r', 't': '\t', '"': '"', '\\': '\\', '$': '$', '\n': ''}

BLANK, COMMENT, ASSIGN, INVALID = 'blank', 'comment', 'assign', 'invalid'


class Line(object):
    """One logical line. For an assignment ``raw == lead + key + sep + value_raw + trail``
    (``trail`` holds blanks, comment and the line terminator)."""

    __slots__ = ('raw', 'kind', 'key', 'value', 'lead', 'sep', 'value_raw', 'trail', 'lineno')

    def __init__(self, raw, kind, lineno, key=None, value=None, lead='', sep='', value_raw='',
                 trail=''):
        self.raw = raw
        self.kind = kind
        self.lineno = lineno
        self.key = key
        self.value = value
        self.lead = lead
        self.sep = sep
        self.value_raw = value_raw
        self.trail = trail

    def __repr__(self):
        return 'Line(%r, %s, key=%r)' % (self.raw, self.kind, self.key)


def _line_end(text, pos):
    """Return ``(end_of_content, end_including_terminator)`` of the physical line at pos."""
    nl = text.find('\n', pos)
    if nl < 0:
        return len(text), len(text)
    if nl > pos and text[nl - 1] == '\r':
        return nl - 1, nl + 1
    return nl, nl + 1


def _scan_double(text, start):
    """``start`` is just after an opening double quote. Return ``(value, index of the
    closing quote)`` or None if it is never closed."""
    out = []
    i = start
    n = len(text)
    while i < n:
        char = text[i]
        if char == '"':
            return ''.join(out), i
        if char == '\\' and i + 1 < n:
            nxt = text[i + 1]
            if nxt == '\r' and i + 2 < n and text[i + 2] == '\n':
                i += 3  # escaped CRLF: line continues
                continue
            if nxt in _DQ_ESCAPES:
                out.append(_DQ_ESCAPES[nxt])
            else:
                out.append('\\' + nxt)
            i += 2
            continue
        out.append(char)
        i += 1
    return None


def _parse_assignment(text, pos, match, lineno):
    lead, key, eq = match.group('lead'), match.group('key'), match.group('eq')
    after = match.end()
    content_end, line_end = _line_end(text, after)
    rest = text[after:content_end]
    stripped = rest.lstrip(' \t')
    blanks = rest[:len(rest) - len(stripped)]
    if stripped[:1] in ('"', "'"):
        quote = stripped[0]
        open_at = after + len(blanks)
        if quote == "'":
            close = text.find("'", open_at + 1)
            scanned = None if close < 0 else (text[open_at + 1:close], close)
        else:
            scanned = _scan_double(text, open_at + 1)
        if scanned is not None:
            value, close = scanned
            t_content_end, t_line_end = _line_end(text, close + 1)
            trail_content = text[close + 1:t_content_end]
            if _TRAIL_RE.match(trail_content):
                return Line(text[pos:t_line_end], ASSIGN, lineno, key=key, value=value,
                            lead=lead, sep=eq + blanks, value_raw=text[open_at:close + 1],
                            trail=text[close + 1:t_line_end]), t_line_end
        # unterminated quote or junk after it: keep this physical line verbatim
        return Line(text[pos:line_end], INVALID, lineno), line_end
    comment = _COMMENT_RE.search(rest)
    value_part = rest[:comment.start()] if comment else rest
    trail_content = rest[comment.start():] if comment else ''
    value_raw = value_part.strip(' \t')
    leading = value_part[:len(value_part) - len(value_part.lstrip(' \t'))]
    trailing = value_part[len(leading) + len(value_raw):]
    return Line(text[pos:line_end], ASSIGN, lineno, key=key, value=value_raw, lead=lead,
                sep=eq + leading, value_raw=value_raw,
                trail=trailing + trail_content + text[content_end:line_end]), line_end


def parse(text):
    """Parse ``.env`` text (str) into an EnvFile. Never fails: what is not understood is
    kept verbatim as an ``invalid`` line."""
    lines = []
    pos = 0
    n = len(text)
    lineno = 1
    while pos < n:
        match = _ASSIGN_RE.match(text, pos)
        content_end, line_end = _line_end(text, pos)
        if match and match.end() <= content_end:
            line, new_pos = _parse_assignment(text, pos, match, lineno)
        else:
            body = text[pos:content_end].strip(' \t\ufeff')
            kind = BLANK if not body else COMMENT if body.startswith('#') else INVALID
            line, new_pos = Line(text[pos:line_end], kind, lineno), line_end
        lines.append(line)
        lineno += line.raw.count('\n')
        pos = new_pos
    return EnvFile(lines)


def parse_bytes(data):
    return parse(data.decode(ENCODING, ERRORS))


def quote_value(value, style=None):
    """Render ``value`` so that parsing gives it back; prefer ``style`` ('', "'", '"')."""
    if style == '' and _BARE_SAFE_RE.match(value):
        return value
    if style == "'" and "'" not in value:
        return "'%s'" % value
    if style is None and _BARE_SAFE_RE.match(value):
        return value
    escaped = (value.replace('\\', '\\\\').replace('"', '\\"').replace('$', '\\$')
               .replace('\n', '\\n').replace('\r', '\\r'))
    return '"%s"' % escaped


def validate_key(param, key):
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise BackupError('%s: %r is not a valid .env key (letters, digits, "_" and ".", not '
                          'starting with a digit)' % (param, key), param=param)
    return key


def validate_value(param, key, value):
    """Values must be text. Booleans are refused: YAML turns ``true`` into True and the
    file would get ``True``; quote it so the exact text is clear."""
    if isinstance(value, bool):
        raise BackupError('%s.%s is a boolean; quote it (e.g. "true") so the exact text '
                          'written is clear' % (param, key), param=param)
    if isinstance(value, (int, float)):
        value = str(value)
    if not isinstance(value, str):
        raise BackupError('%s.%s must be a string (or null to remove the key); got %s'
                          % (param, key, type(value).__name__), param=param)
    if '\x00' in value:
        raise BackupError('%s.%s contains a NUL byte' % (param, key), param=param)
    return value


class EnvFile(object):
    def __init__(self, lines=None):
        self.lines = list(lines or [])

    def dump(self):
        return ''.join(line.raw for line in self.lines)

    def to_bytes(self):
        return self.dump().encode(ENCODING, ERRORS)

    def assignments(self):
        return [line for line in self.lines if line.kind == ASSIGN]

    def invalid_lines(self):
        """Line numbers of lines kept verbatim because they are not understood."""
        return [line.lineno for line in self.lines if line.kind == INVALID]

    def to_dict(self):
        """``{key: value}``; the last definition of a key wins, as when the file is sourced."""
        result = {}
        for line in self.assignments():
            result[line.key] = line.value
        return result

    def keys(self):
        return list(self.to_dict())

    def get(self, key, default=None):
        return self.to_dict().get(key, default)

    def set(self, key, value):
        """Set ``key`` to ``value``; return True if the text changed."""
        for line in reversed(self.lines):
            if line.kind == ASSIGN and line.key == key:
                if line.value == value:
                    return False
                first = line.value_raw[:1]
                style = first if first in ('"', "'") else ''
                new_raw_value = quote_value(value, style)
                line.raw = line.lead + line.key + line.sep + new_raw_value + line.trail
                line.value_raw = new_raw_value
                line.value = value
                return True
        text = self.dump()
        if text and not text.endswith('\n'):
            newline = '\r\n' if '\r\n' in text else '\n'
            self.lines[-1].raw += newline
            self.lines[-1].trail += newline if self.lines[-1].kind == ASSIGN else ''
        newline = '\r\n' if '\r\n' in text else '\n'
        raw_value = quote_value(value)
        self.lines.append(Line(key + '=' + raw_value + newline, ASSIGN, 0, key=key, value=value,
                               sep='=', value_raw=raw_value, trail=newline))
        return True

    def unset(self, key):
        """Remove every definition of ``key``; return True if the text changed."""
        before = len(self.lines)
        self.lines = [line for line in self.lines if not (line.kind == ASSIGN and line.key == key)]
        return len(self.lines) != before

    def apply(self, values, param='values'):
        """Apply ``{key: value or None}`` (None removes the key); return the changed keys."""
        if not isinstance(values, dict):
            raise BackupError('%s must be a mapping of KEY: value' % param, param=param)
        changed = []
        for key in sorted(values):
            validate_key(param, key)
            value = values[key]
            if value is None:
                did = self.unset(key)
            else:
                did = self.set(key, validate_value(param, key, value))
            if did:
                changed.append(key)
        return changed


def key_changes(before, after):
    """Names (never values) of keys added, removed and changed between two ``{k: v}``."""
    return {
        'keys_added': sorted(k for k in after if k not in before),
        'keys_removed': sorted(k for k in before if k not in after),
        'keys_changed': sorted(k for k in after if k in before and before[k] != after[k]),
    }


MASK = '********'


def masked(env):
    """Text listing the keys of ``env`` (a dict) with every value masked, for diff output."""
    return ''.join('%s=%s\n' % (key, MASK) for key in sorted(env))


def masked_diff(before, after, before_header='before', after_header='after'):
    """An Ansible ``diff`` dict that shows which keys change without any value."""
    changes = key_changes(before, after)
    changed = set(changes['keys_changed'])
    after_text = ''.join('%s=%s%s\n' % (key, MASK, '  # changed' if key in changed else '')
                         for key in sorted(after))
    return dict(before=masked(before), after=after_text, before_header=before_header,
                after_header=after_header)
