"""The receiving side of shipping (ship.receive, the forced command): input validation.

Each refusal must leave nothing behind: no file under a final name, no manifest entry, no
temporary file in the incoming directory.
"""

from __future__ import annotations

import hashlib
import io
import json
import os

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import durable, ship
from ansible_collections.codeb.backup.plugins.module_utils.redis import options as ropts
# registers the redis_snapshot channel the tests ship to
from ansible_collections.codeb.backup.plugins.module_utils.redis import shipping  # noqa: F401 pylint: disable=unused-import
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError

DATA = b'REDIS0011' + b'x' * 5000
ENTRY = dict(file='dump-2026-01-07T10:00:00.rdb', kind='rdb', time='2026-01-07T10:00:00',
             sha256=hashlib.sha256(DATA).hexdigest(), size_bytes=len(DATA), status='ok')
ACCEPTED = ['redis_snapshot', 'unit_store']
STORED = []


def _store(path, entry, directory, suffix=''):
    sha, size = durable.durable_copy(path, os.path.join(directory, entry['file'] + suffix))
    STORED.append(entry['file'])
    return dict(changed=True, sha256=sha, size_bytes=size)


def _held(directory):
    return [durable.sha256_file(os.path.join(directory, n)) for n in os.listdir(directory)
            if not n.startswith('.')]


ship.register_channel('unit_store', held=_held, accept=_store, options=dict(suffix=str))


def _stream(entry=None, data=DATA):
    return io.BytesIO((json.dumps(dict(entry=entry or ENTRY)) + '\n').encode() + data)


def _receive(tmp_path, command, stream=None, **kwargs):
    kwargs.setdefault('accepted', ACCEPTED)
    return ship.receive(command, stream or _stream(), str(tmp_path / 'root'), **kwargs)


def _leftovers(tmp_path):
    """Every file under the backup root except the receive lock."""
    found = []
    for base, _dirs, files in os.walk(tmp_path / 'root'):
        found += [os.path.join(base, f) for f in files if f != ship.LOCK_NAME]
    return found


@pytest.fixture(autouse=True)
def root(tmp_path):
    (tmp_path / 'root').mkdir()
    del STORED[:]


@pytest.mark.parametrize('command', [
    '', 'id', 'rm -rf /', 'get redis_snapshot /x', 'put redis_snapshot',
    'put redis_snapshot /a /b', 'have', "put 'unbalanced", 'scp -t /tmp',
])
def test_unknown_verbs_and_shapes_are_refused(tmp_path, command):
    with pytest.raises(BackupError) as info:
        _receive(tmp_path, command)
    assert info.value.param == 'command'
    assert _leftovers(tmp_path) == [] and STORED == []


@pytest.mark.parametrize('relative', [None, '/etc', '/', '{root}/../etc', '{root}/./x',
                                      'relative/dir', '{root}/a/../../etc'])
def test_directories_outside_the_root_are_refused(tmp_path, relative):
    root = str(tmp_path / 'root')
    directory = tmp_path.parent.as_posix() if relative is None else relative.format(root=root)
    with pytest.raises(BackupError) as info:
        _receive(tmp_path, 'put unit_store %s' % directory)
    assert info.value.param == 'directory'
    assert STORED == [] and not os.path.exists(os.path.join(directory, ship.INCOMING))


def test_a_symlink_inside_the_root_that_leads_out_is_refused(tmp_path):
    outside = tmp_path / 'outside'
    outside.mkdir()
    os.symlink(str(outside), str(tmp_path / 'root' / 'link'))
    with pytest.raises(BackupError) as info:
        _receive(tmp_path, 'put unit_store %s' % (tmp_path / 'root' / 'link'))
    assert 'outside the backup root' in info.value.msg
    assert os.listdir(outside) == []


@pytest.mark.parametrize('name', ['../x.rdb', 'a/b.rdb', '.hidden', '-rf', '..', '',
                                  'dump\x00.rdb', 'x' * 300, None, 5])
def test_traversal_and_odd_file_names_are_refused(tmp_path, name):
    directory = tmp_path / 'root' / 'redis'
    with pytest.raises(BackupError) as info:
        _receive(tmp_path, 'put unit_store %s' % directory, _stream(dict(ENTRY, file=name)))
    assert info.value.param == 'entry.file'
    assert _leftovers(tmp_path) == [] and STORED == []
    assert not directory.exists(), 'a refused header creates nothing'


@pytest.mark.parametrize('channel,accepted', [('nosuch', ACCEPTED), ('unit_store', ['redis_snapshot'])])
def test_channels_not_accepted_are_refused(tmp_path, channel, accepted):
    with pytest.raises(BackupError) as info:
        _receive(tmp_path, 'put %s %s' % (channel, tmp_path / 'root'), accepted=accepted)
    assert info.value.param in ('channel', 'accept')
    assert _leftovers(tmp_path) == [] and STORED == []


def test_no_accepted_channel_means_nothing_is_received(tmp_path):
    with pytest.raises(BackupError) as info:
        _receive(tmp_path, 'have unit_store %s' % (tmp_path / 'root'), accepted=[])
    assert info.value.param == 'accept'


@pytest.mark.parametrize('channel', ['unit_store', 'redis_snapshot'])
def test_sha256_mismatch_leaves_nothing(tmp_path, channel):
    directory = tmp_path / 'root' / 'redis'
    damaged = DATA[:-1] + b'y'
    with pytest.raises(BackupError) as info:
        _receive(tmp_path, 'put %s %s' % (channel, directory), _stream(data=damaged))
    assert 'arrived damaged' in info.value.msg
    assert _leftovers(tmp_path) == [] and STORED == []
    assert os.listdir(directory) == [ship.INCOMING]


@pytest.mark.parametrize('data,words', [(DATA[:100], 'cut short'), (DATA + b'more', 'more than'),
                                        (b'', 'cut short')])
def test_short_or_long_streams_leave_nothing(tmp_path, data, words):
    with pytest.raises(BackupError) as info:
        _receive(tmp_path, 'put unit_store %s' % (tmp_path / 'root'), _stream(data=data))
    assert words in info.value.msg
    assert _leftovers(tmp_path) == [] and STORED == []


@pytest.mark.parametrize('header', [b'', b'not json\n', b'[1, 2]\n', b'{"entry": 3}\n',
                                    b'{"entry": {}}' + b' ' * (ship.HEADER_MAX + 10) + b'\n'])
def test_bad_headers_are_refused(tmp_path, header):
    with pytest.raises(BackupError) as info:
        _receive(tmp_path, 'put unit_store %s' % (tmp_path / 'root'), io.BytesIO(header + DATA))
    assert info.value.param in ('entry', 'entry.file')
    assert _leftovers(tmp_path) == [] and STORED == []


@pytest.mark.parametrize('field,value', [('sha256', 'abc'), ('sha256', ENTRY['sha256'].upper()),
                                         ('size_bytes', -1), ('size_bytes', '10'),
                                         ('size_bytes', True)])
def test_bad_sha256_or_size_in_the_entry(tmp_path, field, value):
    with pytest.raises(BackupError) as info:
        _receive(tmp_path, 'put unit_store %s' % (tmp_path / 'root'),
                 _stream(dict(ENTRY, **{field: value})))
    assert info.value.param == 'entry'
    assert _leftovers(tmp_path) == []


def test_redis_channel_refuses_a_name_that_is_no_snapshot(tmp_path):
    entry = dict(ENTRY, file='notes.txt')
    with pytest.raises(BackupError) as info:
        _receive(tmp_path, 'put redis_snapshot %s' % (tmp_path / 'root'), _stream(entry))
    assert info.value.param == 'entry.file'
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize('option', ['keep_min=3', 'redis_snapshot.nosuch=1',
                                    'redis_snapshot.keep_min=three', 'other.keep_min=1'])
def test_bad_receiver_options_are_refused(tmp_path, option):
    with pytest.raises(BackupError) as info:
        _receive(tmp_path, 'have redis_snapshot %s' % (tmp_path / 'root'), options=[option])
    assert info.value.param in ('option', 'channel')


def test_a_good_put_goes_through_the_channel_and_have_lists_it(tmp_path):
    directory = tmp_path / 'root' / 'store'
    result = _receive(tmp_path, 'put unit_store %s' % directory, options=['unit_store.suffix=.x'])
    assert result['received_sha256'] == ENTRY['sha256'] and result['received_bytes'] == len(DATA)
    assert (directory / (ENTRY['file'] + '.x')).read_bytes() == DATA
    assert os.listdir(directory / ship.INCOMING) == [ship.LOCK_NAME]
    have = _receive(tmp_path, "have unit_store '%s'" % directory)
    assert have['sha256'] == [ENTRY['sha256']]


def test_stale_temps_of_a_killed_receive_are_cleared_by_the_next(tmp_path):
    directory = tmp_path / 'root' / 'store'
    (directory / ship.INCOMING).mkdir(parents=True)
    stale = directory / ship.INCOMING / (durable.TEMP_PREFIX + ENTRY['file'] + '.abc')
    stale.write_bytes(b'half')
    _receive(tmp_path, 'put unit_store %s' % directory)
    assert not stale.exists()


def test_redis_channel_is_registered_with_its_retention_options():
    assert ropts.SHIP_CHANNEL in ship.channels()
    assert ship.parse_options(['redis_snapshot.keep_min=5', 'redis_snapshot.aof_keep=2']) == {
        'redis_snapshot': {'keep_min': 5, 'aof_keep': 2}}


def test_a_symlinked_incoming_is_refused_and_nothing_outside_the_root_is_touched(tmp_path):
    """.incoming is a name the receiver writes into and clears: a symlink there must not
    lead its writes and its clean-up out of the root."""
    outside = tmp_path / 'outside'
    outside.mkdir()
    precious = outside / (durable.TEMP_PREFIX + 'precious')
    precious.write_bytes(b'keep me')
    directory = tmp_path / 'root' / 'store'
    directory.mkdir()
    os.symlink(str(outside), str(directory / ship.INCOMING))
    with pytest.raises(BackupError) as info:
        _receive(tmp_path, 'put unit_store %s' % directory)
    assert info.value.param == 'directory' and ship.INCOMING in info.value.msg
    assert precious.read_bytes() == b'keep me'
    assert sorted(os.listdir(outside)) == [precious.name]
    assert STORED == []


def test_everything_a_killed_receive_left_in_incoming_is_cleared(tmp_path):
    directory = tmp_path / 'root' / 'store'
    incoming = directory / ship.INCOMING
    (incoming / 'half-dir').mkdir(parents=True)
    (incoming / 'dump-2026-01-07T10:00:00.rdb.partial').write_bytes(b'half')
    _receive(tmp_path, 'put unit_store %s' % directory)
    assert os.listdir(incoming) == [ship.LOCK_NAME]


@pytest.mark.parametrize('name', ['_hidden..rdb', 'a' * 300])
def test_entry_names_pass_the_shared_file_name_check(tmp_path, name):
    with pytest.raises(BackupError) as info:
        ship.validate_entry(dict(ENTRY, file=name))
    assert info.value.param == 'entry.file'
