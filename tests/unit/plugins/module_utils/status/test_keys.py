"""The status API's key store: only digests stored (0600), add/list/revoke/rotation, bad
input refused naming the parameter, and one authentication path for every wrong key."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.status import keys as keys_mod
from ansible_collections.codeb.backup.plugins.module_utils.status.keys import KeyStore


@pytest.fixture
def store(tmp_path):
    return KeyStore(str(tmp_path / 'keys.json'))


def test_add_stores_only_the_sha256_in_a_0600_file(store):
    created = store.add('default', 'viewer', name='grafana')
    key = created['key']
    assert key.startswith('codeb_default_viewer_') and len(key.split('_', 3)[3]) >= 40
    text = open(store.path).read()
    assert key not in text and key.split('_', 3)[3] not in text
    data = json.loads(text)
    assert data['version'] == 1
    [record] = data['keys']
    assert record['sha256'] == hashlib.sha256(key.encode()).hexdigest()
    assert record['team'] == 'default' and record['role'] == 'viewer' and record['name'] == 'grafana'
    assert record['revoked'] is None and record['created'].endswith('Z')
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert store.authenticate(key)['id'] == created['id']


def test_list_never_shows_digests(store):
    store.add('default', 'viewer')
    store.add('ops', 'admin', name='cli')
    listed = store.list()
    assert [(k['team'], k['role']) for k in listed] == [('default', 'viewer'), ('ops', 'admin')]
    assert all('sha256' not in k and 'key' not in k for k in listed)


def test_revoke_takes_effect_and_is_idempotent(store):
    created = store.add('default', 'admin')
    assert store.authenticate(created['key']) is not None
    first = store.revoke(created['id'])
    assert first['changed'] is True and first['revoked']
    assert store.authenticate(created['key']) is None
    again = store.revoke(created['id'])
    assert again['changed'] is False and again['revoked'] == first['revoked']


def test_rotation_is_add_new_then_revoke_old(store):
    old = store.add('default', 'viewer', name='grafana')
    new = store.add('default', 'viewer', name='grafana')
    assert new['key'] != old['key'] and new['id'] != old['id']
    assert store.authenticate(old['key']) and store.authenticate(new['key'])  # overlap
    store.revoke(old['id'])
    assert store.authenticate(old['key']) is None
    assert store.authenticate(new['key'])['id'] == new['id']


def test_team_and_role_come_from_the_record_not_the_key_text(store, tmp_path):
    created = store.add('default', 'viewer')
    data = json.loads(open(store.path).read())
    data['keys'][0]['team'] = 'other'
    data['keys'][0]['role'] = 'admin'
    with open(store.path, 'w') as handle:
        json.dump(data, handle)
    record = store.authenticate(created['key'])
    assert (record['team'], record['role']) == ('other', 'admin')


def test_changes_by_another_writer_are_seen_without_a_new_store(store):
    reader = KeyStore(store.path)
    assert reader.authenticate('codeb_default_viewer_x') is None  # loads (missing file)
    created = store.add('default', 'viewer')
    assert reader.authenticate(created['key'])['id'] == created['id']
    store.revoke(created['id'])
    assert reader.authenticate(created['key']) is None


@pytest.mark.parametrize('team, role, name, param', [
    ('', 'viewer', None, 'team'),
    ('../x', 'viewer', None, 'team'),
    ('a_b', 'viewer', None, 'team'),
    ('default', 'root', None, 'role'),
    ('default', 'viewer', 'a/b', 'name'),
])
def test_bad_input_is_refused_naming_the_parameter_and_changes_nothing(store, team, role, name, param):
    store.add('default', 'viewer')
    before = open(store.path, 'rb').read()
    with pytest.raises(BackupError) as info:
        store.add(team, role, name=name)
    assert info.value.param == param and param in info.value.msg
    assert open(store.path, 'rb').read() == before


def test_revoke_of_an_unknown_id_names_the_id(store):
    store.add('default', 'viewer')
    with pytest.raises(BackupError) as info:
        store.revoke('nope')
    assert info.value.param == 'id'


def test_a_damaged_key_file_is_an_error_naming_keys_file(store):
    with open(store.path, 'w') as handle:
        handle.write('{"version": 1, "keys": [{"id": "x"}]}')
    with pytest.raises(BackupError) as info:
        store.authenticate('anything')
    assert info.value.param == 'keys_file'


def test_every_wrong_key_takes_the_same_path(store, monkeypatch):
    """Missing, malformed, unknown, revoked, or one part wrong: one hash of what was sent,
    then one constant-time comparison with every active record, none skipped."""
    good = store.add('default', 'viewer')['key']
    store.add('ops', 'admin')
    revoked = store.add('default', 'admin')
    store.revoke(revoked['id'])
    token = good.split('_', 3)[3]
    wrong = {
        'missing': None,
        'empty': '',
        'malformed': 'not-a-key',
        'unknown': 'codeb_default_viewer_' + 'A' * 43,
        'revoked': revoked['key'],
        'team wrong': 'codeb_other_viewer_' + token,
        'role wrong': 'codeb_default_admin_' + token,
        'token wrong': good[:-1] + ('B' if good[-1] != 'B' else 'C'),
        'prefix wrong': 'codeX' + good[5:],
    }
    calls = []
    real_digest, real_compare = keys_mod.digest, keys_mod.hmac.compare_digest

    def recording_digest(value):
        calls.append('digest')
        return real_digest(value)

    def recording_compare(a, b):
        calls.append(('compare', b))
        return real_compare(a, b)

    monkeypatch.setattr(keys_mod, 'digest', recording_digest)
    monkeypatch.setattr(keys_mod.hmac, 'compare_digest', recording_compare)
    store.authenticate(good)  # load the file once, outside the recorded sequences
    sequences = {}
    for what, key in wrong.items():
        del calls[:]
        assert store.authenticate(key) is None, what
        sequences[what] = list(calls)
    del calls[:]
    assert store.authenticate(good) is not None
    expected = sequences['missing']
    assert len(expected) == 3 and expected[0] == 'digest'  # 2 active records compared
    assert all(sequence == expected for sequence in sequences.values()), sequences
    assert calls == expected  # the right key takes the same path too
