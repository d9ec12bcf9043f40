# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shipping finished artifacts from this host to the backup host over SSH, verified on arrival.

Generic: an artifact is a file plus its manifest entry (at least ``file``, ``sha256`` and
``size_bytes``). What happens to it on the backup host is decided by a *channel* that a
subsystem registers with :func:`register_channel` (``held`` lists the sha256s a directory
already holds, ``accept`` takes a received file into it: the subsystem's own import path).
Nothing here knows about Redis, PostgreSQL or env files.

Sending side (:func:`push`): ``ssh -i KEY -o BatchMode=yes ... HOST 'have CHANNEL DIR'``
answers which sha256s the backup host holds; each artifact it lacks is streamed on stdin to
``put CHANNEL DIR`` (one JSON header line with the entry, then exactly ``size_bytes`` bytes).

Receiving side (:func:`receive`, the host command ``codeb-backup receive``): run as the
forced command of the shipping key in ``authorized_keys``
(``restrict,command="codeb-backup receive --root /opt/codeb --accept CHANNEL ..."``). It
reads the client's request from ``SSH_ORIGINAL_COMMAND``, accepts only the verbs ``have``
and ``put``, a channel the forced command allows and a directory inside ``--root``. A put
is written under a temporary name in ``DIR/.incoming/``, hashed while it is written,
fsynced, compared with the entry's sha256 and size, and only then handed to the channel.
A cut or damaged transfer leaves no file under a final name, on either side: the sender
only reads, the receiver discards its temporary file (or the next put clears it).

Without a host (backup root on this host), :func:`push` calls the same receiving code in
process, so every path through here verifies in the same way.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading

from ansible_collections.codeb.backup.plugins.module_utils import durable, naming
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.locking import job_lock
from ansible_collections.codeb.backup.plugins.module_utils.spec import (
    Option, add_arguments, params_from_args,
)

VERBS = ('have', 'put')
INCOMING = '.incoming'
LOCK_NAME = '.receive.lock'
HEADER_MAX = 64 * 1024
DEFAULT_SSH = 'ssh'
DEFAULT_CONNECT_TIMEOUT = 20
# An artifact name is one path component: letters, digits, "_", "-", "." and ":" (the
# timestamps), starting with a letter or digit, so it can never leave its directory, hide
# or read as an option.
_FILE_RE = re.compile(r'\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}\Z')
_CHANNEL_RE = re.compile(r'\A[a-z][a-z0-9_]{0,40}\Z')
_OPTION_RE = re.compile(r'\A([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)=(.*)\Z')

# name -> dict(held=fn(directory) -> iterable of sha256,
#              accept=fn(path, entry, directory, **options) -> result dict,
#              options={option name: type})
_CHANNELS = {}


def register_channel(name, held, accept, options=None):
    """Make ``name`` receivable. ``options`` maps the settings the receiving side's forced
    command may give (``--option NAME.KEY=VALUE``) to their type (int, float, str)."""
    if not _CHANNEL_RE.match(name):
        raise ValueError('bad channel name %r' % name)
    _CHANNELS[name] = dict(held=held, accept=accept, options=dict(options or {}))


def channels():
    return sorted(_CHANNELS)


# --------------------------------------------------------------------------- validation

def validate_directory(param, directory, root):
    """``directory`` must be absolute, normalised and inside ``root`` (after resolving
    symlinks of the existing part); returns it."""
    if not isinstance(directory, str) or not os.path.isabs(directory):
        raise BackupError('%s must be an absolute path; got %r' % (param, directory), param=param)
    parts = directory.split('/')
    if '..' in parts or '.' in parts or os.path.normpath(directory) != directory.rstrip('/') \
            or '\x00' in directory:
        raise BackupError('%s must not contain "." or ".." components; got %r'
                          % (param, directory), param=param)
    if root is not None:
        real_root = os.path.realpath(root)
        real = os.path.realpath(directory)
        if real != real_root and not real.startswith(real_root.rstrip('/') + '/'):
            raise BackupError('%s %s is outside the backup root %s this key may write to'
                              % (param, directory, root), param=param)
    return directory.rstrip('/') or '/'


def validate_entry(entry):
    """The parts of a manifest entry the transport relies on: a safe file name, a sha256
    and a size. The channel validates the rest (its own naming rules)."""
    if not isinstance(entry, dict):
        raise BackupError('entry must be a manifest entry (a JSON object)', param='entry')
    name = entry.get('file')
    if not isinstance(name, str) or not _FILE_RE.match(name) or '..' in name:
        raise BackupError('entry.file %r is not allowed: one file name of letters, digits, "_", '
                          '"-", "." and ":", starting with a letter or digit (no "/", no "..")'
                          % (name,), param='entry.file')
    naming.validate_file_name('entry.file', name)
    sha = entry.get('sha256')
    if not isinstance(sha, str) or not naming.SHA256_RE.match(sha):
        raise BackupError('entry.sha256 must be 64 lowercase hex digits; got %r' % (sha,),
                          param='entry')
    size = entry.get('size_bytes')
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BackupError('entry.size_bytes must be a non-negative integer; got %r' % (size,),
                          param='entry')
    return entry


def _channel(name, accepted):
    if name not in _CHANNELS or (accepted is not None and name not in accepted):
        allowed = sorted(accepted if accepted is not None else _CHANNELS)
        raise BackupError('channel %r is not accepted here (allowed: %s)'
                          % (name, ', '.join(allowed) or 'none'), param='channel')
    return _CHANNELS[name]


def parse_options(values, accepted=None):
    """``['redis_snapshot.keep_min=3', ...]`` -> ``{'redis_snapshot': {'keep_min': 3}}``,
    typed by what each channel registered."""
    result = {}
    for value in values or []:
        match = _OPTION_RE.match(value)
        if not match:
            raise BackupError('--option must look like CHANNEL.KEY=VALUE; got %r' % value,
                              param='option')
        name, key, raw = match.groups()
        kind = _channel(name, accepted)['options'].get(key)
        if kind is None:
            raise BackupError('channel %s has no option %r (known: %s)' % (
                name, key, ', '.join(sorted(_CHANNELS[name]['options'])) or 'none'),
                param='option')
        try:
            result.setdefault(name, {})[key] = kind(raw)
        except ValueError:
            raise BackupError('option %s.%s must be a %s; got %r' % (name, key, kind.__name__, raw),
                              param='option')
    return result


# --------------------------------------------------------------------------- receiving side

def parse_request(original_command):
    """``SSH_ORIGINAL_COMMAND`` -> ``(verb, channel, directory)``; anything else is refused."""
    if not original_command:
        raise BackupError('no command given: this key only runs "have CHANNEL DIR" or '
                          '"put CHANNEL DIR"', param='command')
    try:
        words = shlex.split(original_command)
    except ValueError as exc:
        raise BackupError('cannot parse the command %r: %s' % (original_command, exc),
                          param='command')
    if len(words) != 3 or words[0] not in VERBS:
        raise BackupError('refused %r: this key only runs "have CHANNEL DIR" or '
                          '"put CHANNEL DIR"' % original_command[:200], param='command')
    return words[0], words[1], words[2]


def held(channel, directory, root=None, accepted=None):
    """The sha256s of the artifacts ``directory`` already holds (whole, in its manifest)."""
    spec = _channel(channel, accepted)
    validate_directory('directory', directory, root)
    if not os.path.isdir(directory):
        return []
    return sorted(set(spec['held'](directory)))


def receive_stream(stream, channel, directory, root=None, accepted=None, options=None,
                   lock_timeout=60, entry=None):
    """Read one artifact from ``stream`` (a binary file object) into ``directory``.

    Without ``entry`` the stream starts with one JSON header line ``{"entry": {...}}``.
    Exactly ``entry['size_bytes']`` bytes follow; they are written under a temporary name in
    ``directory/.incoming``, hashed as they are written and fsynced; a short stream, extra
    bytes or another sha256 are refused and the temporary file removed. Then the channel's
    ``accept`` (the subsystem's import: its own checks, manifest, retention) takes it in."""
    spec = _channel(channel, accepted)
    directory = validate_directory('directory', directory, root)
    if entry is None:
        entry = _read_header(stream)
    validate_entry(entry)
    durable.ensure_dir(directory)
    incoming = _incoming_dir(directory, root)
    check_room(incoming, entry)
    with job_lock(os.path.join(incoming, LOCK_NAME), 'receive into %s' % directory,
                  wait=lock_timeout):
        clear_incoming(incoming)  # what a killed receive left behind
        temp = durable.temp_path(os.path.join(incoming, entry['file']))
        try:
            sha, size = _write_exactly(stream, temp, entry['size_bytes'])
            if sha != entry['sha256']:
                raise BackupError('%s arrived damaged: sha256 %s, the sender\'s manifest says '
                                  '%s; nothing was stored, ship it again'
                                  % (entry['file'], sha, entry['sha256']), param='entry')
            result = spec['accept'](temp, entry, directory, **dict(options or {}))
        finally:
            durable.discard(temp)
    result = dict(result)
    result.update(received=entry['file'], received_sha256=sha, received_bytes=size)
    return result


def _incoming_dir(directory, root=None):
    """``DIR/.incoming``, created if missing; refused unless it is a real directory right
    there (a symlink could lead the receiver's writes and clean-up out of the root)."""
    incoming = os.path.join(directory, INCOMING)
    if os.path.islink(incoming) or (os.path.lexists(incoming) and not os.path.isdir(incoming)):
        raise BackupError('%s is not a plain directory (a symlink or a file): refusing to receive '
                          'into %s; remove it' % (incoming, directory), param='directory')
    durable.ensure_dir(incoming)
    if root is not None:
        validate_directory('directory', incoming, root)
    return incoming


def check_room(directory, entry):
    """Refuse an announcement larger than the free space of ``directory``'s file system
    before a byte is written (a lying or huge header cannot fill the backup host's disk)."""
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize
    if entry['size_bytes'] > free:
        raise BackupError('%s announces %d bytes, more than the %d bytes free in %s: refused, '
                          'nothing was written' % (entry['file'], entry['size_bytes'], free,
                                                   directory), param='entry.size_bytes')


def clear_incoming(incoming):
    """Under the receive lock: everything in ``.incoming`` but the lock is what a killed or
    failed receive left (its temporaries); remove it. Returns the names."""
    removed = []
    for name in sorted(os.listdir(incoming)):
        if name == LOCK_NAME:
            continue
        durable.discard(os.path.join(incoming, name))
        removed.append(name)
    if removed:
        durable.fsync_dir(incoming)
    return removed


def _read_header(stream):
    line = stream.readline(HEADER_MAX + 1)
    if not line.endswith(b'\n') or len(line) > HEADER_MAX:
        raise BackupError('the transfer did not start with a header line (at most %d bytes)'
                          % HEADER_MAX, param='entry')
    try:
        header = json.loads(line.decode('utf-8'))
    except ValueError as exc:
        raise BackupError('the header line is not JSON: %s' % exc, param='entry')
    if not isinstance(header, dict) or not isinstance(header.get('entry'), dict):
        raise BackupError('the header line must be {"entry": {...}}', param='entry')
    return header['entry']


def _write_exactly(stream, path, size):
    """Copy exactly ``size`` bytes of ``stream`` to ``path`` (fsynced); ``(sha256, size)``."""
    with open(path, 'wb') as target:
        sha, copied = durable.copy_hashed(stream, target, size)
        if copied < size:
            raise BackupError('the transfer was cut short: %d of %d bytes arrived; nothing '
                              'was stored' % (copied, size), param='entry')
        if stream.read(1):
            raise BackupError('the transfer sent more than the %d bytes its entry announced; '
                              'nothing was stored' % size, param='entry')
        target.flush()
        os.fsync(target.fileno())
    return sha, size


def receive(original_command, stream, root, accepted, options=None, lock_timeout=60):
    """The forced command: serve one request from ``SSH_ORIGINAL_COMMAND``."""
    if not root:
        raise BackupError('--root is required: the directory tree this key may write to',
                          param='root')
    validate_directory('root', root, None)
    accepted = list(accepted or [])
    if not accepted:
        raise BackupError('--accept names no channel: this key may receive nothing',
                          param='accept')
    for name in accepted:
        _channel(name, None)
    options = parse_options(options, accepted)
    verb, channel, directory = parse_request(original_command)
    if verb == 'have':
        return dict(changed=False, channel=channel, directory=directory,
                    sha256=held(channel, directory, root, accepted))
    return receive_stream(stream, channel, directory, root=root, accepted=accepted,
                          options=options.get(channel), lock_timeout=lock_timeout)


# --------------------------------------------------------------------------- sending side

class Target(object):
    """Where to ship: ``host`` (None = this host), SSH user, port, key and known_hosts."""

    def __init__(self, host=None, user='root', port=22, key_file=None, known_hosts=None,
                 ssh=DEFAULT_SSH, connect_timeout=DEFAULT_CONNECT_TIMEOUT, ssh_options=None):
        self.host = host or None
        self.user = user
        self.port = int(port)
        self.key_file = key_file
        self.known_hosts = known_hosts
        self.ssh = ssh
        self.connect_timeout = connect_timeout
        self.ssh_options = list(ssh_options or [])
        if self.host:
            if not re.match(r'\A[A-Za-z0-9_.:\[\]-]+\Z', self.host) or self.host.startswith('-'):
                raise BackupError('ship host %r is not a host name or address' % self.host,
                                  param='host')
            naming.validate_name('user', user)
            if not key_file:
                raise BackupError('a key file is needed to ship to %s' % self.host,
                                  param='key_file')

    def argv(self, remote_command):
        argv = [self.ssh, '-i', self.key_file, '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes',
                '-o', 'StrictHostKeyChecking=yes', '-o', 'ConnectTimeout=%d' % self.connect_timeout,
                '-o', 'ServerAliveInterval=15', '-o', 'ServerAliveCountMax=4',
                '-o', 'LogLevel=ERROR', '-p', str(self.port), '-T']
        if self.known_hosts:
            argv += ['-o', 'UserKnownHostsFile=%s' % self.known_hosts]
        for option in self.ssh_options:
            argv += ['-o', option]
        return argv + ['-l', self.user, '--', self.host, remote_command]


def _remote(target, verb, channel, directory, stdin=None):
    """Run one request on the backup host; return its JSON result."""
    command = ' '.join(shlex.quote(w) for w in (verb, channel, directory))
    try:
        proc = subprocess.run(target.argv(command), stdin=stdin if stdin is not None
                              else subprocess.DEVNULL, capture_output=True, check=False)
    except FileNotFoundError:
        raise BackupError('%s is not installed (Debian: openssh-client)' % target.ssh,
                          param='ssh')
    out = proc.stdout.decode('utf-8', 'replace').strip()
    err = proc.stderr.decode('utf-8', 'replace').strip()
    result = None
    if out:
        try:
            result = json.loads(out[out.index('{'):])
        except ValueError:
            result = None
    if proc.returncode != 0 or not isinstance(result, dict) or result.get('failed'):
        msg = (result or {}).get('msg') if isinstance(result, dict) else None
        raise BackupError('%s on %s@%s:%d failed (exit %d): %s' % (
            verb, target.user, target.host, target.port, proc.returncode,
            msg or err[-1500:] or out[-1500:] or 'no output'), rc=proc.returncode)
    return result


def remote_held(target, channel, directory):
    if target.host is None:
        return held(channel, directory)
    return _remote(target, 'have', channel, directory).get('sha256', [])


def push(artifacts, target, channel, directory, local_options=None):
    """Ship each ``(path, entry)`` the backup host lacks to ``directory`` there; each is
    verified on arrival (sha256 and size) before the channel takes it in. Returns
    ``dict(shipped=[...], present=[...])``. ``local_options`` are the channel's settings
    when the backup root is on this host (a remote receiver has its own, in its forced
    command)."""
    validate_directory('directory', directory, None)
    have = set(remote_held(target, channel, directory))
    shipped, present = [], []
    for path, entry in artifacts:
        validate_entry(entry)
        if entry['sha256'] in have:
            present.append(entry['file'])
            continue
        if os.path.getsize(path) != entry['size_bytes']:
            raise BackupError('%s is %d bytes, its manifest entry says %d: not shipped'
                              % (path, os.path.getsize(path), entry['size_bytes']), param='entry')
        if target.host is None:
            with open(path, 'rb') as source:
                result = receive_stream(source, channel, directory, entry=dict(entry),
                                        options=local_options)
        else:
            result = _put(target, channel, directory, path, entry)
        if result.get('received_sha256') != entry['sha256']:
            raise BackupError('the backup host reports sha256 %s for %s, expected %s'
                              % (result.get('received_sha256'), entry['file'], entry['sha256']))
        shipped.append(dict(file=entry['file'], sha256=entry['sha256'],
                            size_bytes=entry['size_bytes'], result=result))
        have.add(entry['sha256'])
    return dict(changed=bool(shipped), shipped=shipped, present=present, channel=channel,
                host=target.host or 'localhost', directory=directory)


def _put(target, channel, directory, path, entry):
    header = (json.dumps(dict(entry=entry), sort_keys=True) + '\n').encode('utf-8')
    read_fd, write_fd = os.pipe()
    # ssh reads the header and then the file from one pipe; a writer thread feeds it so a
    # large file never sits in memory.
    failure = {}

    def feed():
        try:
            with os.fdopen(write_fd, 'wb') as sink, open(path, 'rb') as source:
                sink.write(header)
                durable.copy_hashed(source, sink)
        except (BrokenPipeError, OSError) as exc:
            failure['error'] = exc

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        with os.fdopen(read_fd, 'rb') as stdin:
            return _remote(target, 'put', channel, directory, stdin=stdin)
    finally:
        writer.join()


# --------------------------------------------------------------------------- host CLI

def target_options(prefix='ship'):
    """The options of a sending command that say where to ship (``ship_host`` ...)."""
    return (
        Option('%s_host' % prefix, default='',
               help='backup host to ship to over SSH ("" = the backup root is on this host)'),
        Option('%s_user' % prefix, default='root', help='SSH user on the backup host'),
        Option('%s_port' % prefix, type='int', default=22, help='SSH port'),
        Option('%s_key' % prefix, type='path', help='private key of the shipping user'),
        Option('%s_known_hosts' % prefix, type='path',
               help='known_hosts file holding the backup host\'s key'),
        Option('%s_dir' % prefix, type='path', help='directory on the backup host'),
    )


def add_target_arguments(parser, prefix='ship'):
    """The ``--ship-*`` options of a sending command (shared by every subsystem)."""
    add_arguments(parser, target_options(prefix))


def target_from_args(args, prefix='ship'):
    params = params_from_args(args, target_options(prefix))

    def get(name):
        return params['%s_%s' % (prefix, name)]
    return Target(host=get('host') or None, user=get('user'), port=get('port'),
                  key_file=get('key'), known_hosts=get('known_hosts'))


def register_cli(subparsers):
    rec = subparsers.add_parser(
        'receive', help='forced SSH command on the backup host: take shipped artifacts in',
        description='Serve one shipping request read from $SSH_ORIGINAL_COMMAND ("have '
                    'CHANNEL DIR" or "put CHANNEL DIR", the artifact on stdin). Meant as '
                    'the forced command of the shipping key in authorized_keys.')
    rec.add_argument('--root', required=True,
                     help='only directories inside this tree may be written or read')
    rec.add_argument('--accept', action='append', default=[],
                     help='channel this key may ship to (repeatable): %s' % ', '.join(channels())
                     if channels() else 'channel this key may ship to (repeatable)')
    rec.add_argument('--option', action='append', default=[],
                     help='CHANNEL.KEY=VALUE setting of the receiving side (e.g. retention)')
    rec.add_argument('--lock-timeout', type=float, default=60)
    rec.set_defaults(handler=_cli_receive)


def _cli_receive(args):
    return receive(os.environ.get('SSH_ORIGINAL_COMMAND', ''), sys.stdin.buffer, args.root,
                   args.accept, args.option, args.lock_timeout)
