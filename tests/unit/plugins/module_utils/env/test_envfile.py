"""The .env parser/editor: byte-for-byte round trips (hypothesis) and minimal edits."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.codeb.backup.plugins.module_utils.env import envfile
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError

KEYS = st.from_regex(r'\A[A-Za-z_][A-Za-z0-9_]{0,12}\Z')
# unicode of every plane except surrogates, no NUL
ANY_CHAR = st.characters(blacklist_categories=('Cs',), blacklist_characters='\x00')
BARE_ALPHABET = string.ascii_letters + string.digits + '=:/@.-_+,%ü한€'
COMMENT_TEXT = st.text(st.characters(blacklist_categories=('Cs',),
                                     blacklist_characters='\x00\n\r'), max_size=20)


def _render_double(value, literal_newlines, continuation_at):
    out = []
    for index, char in enumerate(value):
        if index in continuation_at:
            out.append('\\\n')  # an escaped newline contributes nothing to the value
        if char == '\\':
            out.append('\\\\')
        elif char == '"':
            out.append('\\"')
        elif char == '\n':
            out.append('\n' if literal_newlines else '\\n')
        elif char == '\r':
            out.append('\\r')
        elif char == '\t':
            out.append('\\t')
        elif char == '$':
            out.append('\\$')
        else:
            out.append(char)
    return '"%s"' % ''.join(out)


@st.composite
def assignment(draw):
    key = draw(KEYS)
    style = draw(st.sampled_from(['bare', 'single', 'double']))
    if style == 'bare':
        value = draw(st.text(st.sampled_from(BARE_ALPHABET), max_size=20))
        rendered = value
    elif style == 'single':
        value = draw(st.text(ANY_CHAR.filter(lambda c: c not in "'\r"), max_size=20))
        rendered = "'%s'" % value
    else:
        value = draw(st.text(ANY_CHAR, max_size=20))
        rendered = _render_double(value, draw(st.booleans()),
                                  draw(st.sets(st.integers(0, 20), max_size=3)))
    export = draw(st.sampled_from(['', 'export ', '  export  ']))
    before = draw(st.sampled_from(['', ' ', '\t']))
    after = draw(st.sampled_from(['', ' ']))
    comment = draw(st.sampled_from(['', ' # note', '  #' + draw(COMMENT_TEXT)]))
    if style == 'bare' and not value:
        comment = ''  # "K= # c" is an empty value plus a comment: covered by an example test
    line = '%s%s%s=%s%s%s' % (export, key, before, after, rendered, comment)
    return key, value, line


@st.composite
def env_text(draw):
    lines = draw(st.lists(st.one_of(
        assignment(),
        st.builds(lambda c: (None, None, '#' + c), COMMENT_TEXT),
        st.just((None, None, '')),
        st.just((None, None, '   ')),
    ), max_size=12))
    newline = draw(st.sampled_from(['\n', '\r\n']))
    final_newline = draw(st.booleans())
    text = newline.join(line for _k, _v, line in lines)
    if lines and final_newline:
        text += newline
    expected = {}
    for key, value, _line in lines:
        if key is not None:
            expected[key] = value
    return text, expected, [k for k, _v, _l in lines if k is not None]


@settings(max_examples=400, deadline=None)
@given(env_text())
def test_well_formed_round_trips_and_parses_values(sample):
    text, expected, _keys = sample
    parsed = envfile.parse(text)
    assert parsed.dump() == text
    assert parsed.to_dict() == expected
    assert parsed.invalid_lines() == []


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_round_trips(text):
    assert envfile.parse(text).dump() == text


@settings(max_examples=300, deadline=None)
@given(st.binary())
def test_any_bytes_round_trip(data):
    assert envfile.parse_bytes(data).to_bytes() == data


@settings(max_examples=300, deadline=None)
@given(st.text(ANY_CHAR, max_size=30), st.sampled_from([None, '', "'", '"']))
def test_quote_value_parses_back(value, style):
    text = 'K=' + envfile.quote_value(value, style) + '\n'
    assert envfile.parse(text).to_dict() == {'K': value}


@settings(max_examples=300, deadline=None)
@given(env_text(), st.text(ANY_CHAR, max_size=20), st.data())
def test_set_changes_only_the_key_line(sample, new_value, data):
    text, expected, keys = sample
    parsed = envfile.parse(text)
    before = [line.raw for line in parsed.lines]
    key = data.draw(st.sampled_from(keys)) if keys else 'NEW_KEY'
    parsed.set(key, new_value)
    result = parsed.dump()
    reparsed = envfile.parse(result)
    assert reparsed.to_dict() == dict(expected, **{key: new_value})
    if key in expected:
        # exactly one line differs: the last definition of key
        after = [line.raw for line in parsed.lines]
        assert len(after) == len(before)
        differing = [i for i, (a, b) in enumerate(zip(before, after)) if a != b]
        last = max(i for i, line in enumerate(parsed.lines) if line.key == key)
        assert differing in ([], [last])
        if expected[key] == new_value:
            assert result == text
    else:
        assert result.startswith(text)


def test_values_edit_keeps_other_lines_byte_identical():
    text = ('# Production settings — do not commit\r\n'
            '\r\n'
            'export DATABASE_URL="postgres://app:p%40ss@db/worb?sslmode=require"  # primary\r\n'
            "SMTP_PASSWORD='old secret'\r\n"
            'FEATURE_X=off # toggled by ops\r\n'
            'MULTI="line one\\nline two"\r\n'
            'GREETING=안녕=hello\r\n'
            'this line is not an assignment\r\n'
            'EMPTY=\r\n')
    parsed = envfile.parse(text)
    changed = parsed.apply({'SMTP_PASSWORD': "new 'quoted' secret", 'FEATURE_X': 'on',
                            'ADDED': 'a b', 'EMPTY': None})
    assert changed == ['ADDED', 'EMPTY', 'FEATURE_X', 'SMTP_PASSWORD']
    assert parsed.dump() == (
        '# Production settings — do not commit\r\n'
        '\r\n'
        'export DATABASE_URL="postgres://app:p%40ss@db/worb?sslmode=require"  # primary\r\n'
        'SMTP_PASSWORD="new \'quoted\' secret"\r\n'
        'FEATURE_X=on # toggled by ops\r\n'
        'MULTI="line one\\nline two"\r\n'
        'GREETING=안녕=hello\r\n'
        'this line is not an assignment\r\n'
        'ADDED="a b"\r\n')
    assert parsed.invalid_lines() == [8]


@pytest.mark.parametrize('text,expected', [
    ('A=1', {'A': '1'}),
    ('export A=1\n', {'A': '1'}),
    ('A = spaced value  # c\n', {'A': 'spaced value'}),
    ('A= # only a comment\n', {'A': ''}),
    ('A=#not-a-comment\n', {'A': '#not-a-comment'}),
    ('A=b=c==\n', {'A': 'b=c=='}),
    ("A='x\ny # z'\n", {'A': 'x\ny # z'}),
    ('A="x\\\ny"\n', {'A': 'xy'}),
    ('A="x\\\r\ny"\r\n', {'A': 'xy'}),
    ('A="tab\\tq\\"\\\\ \\$HOME \\q"\n', {'A': 'tab\tq"\\ $HOME \\q'}),
    ('A=1\nA=2\n', {'A': '2'}),
    ('\ufeffA=1\n', {'A': '1'}),
    ('A="unterminated\nB=2\n', {'B': '2'}),
    ('A="x" junk\nB=2\n', {'B': '2'}),
    ('export\nexport=3\n', {'export': '3'}),
])
def test_parse_examples(text, expected):
    parsed = envfile.parse(text)
    assert parsed.to_dict() == expected
    assert parsed.dump() == text


def test_unset_removes_every_definition_and_keeps_the_rest():
    text = 'A=1\n# keep\nB=2\nA=3\n'
    parsed = envfile.parse(text)
    assert parsed.unset('A')
    assert parsed.dump() == '# keep\nB=2\n'
    assert not parsed.unset('A')


def test_append_to_file_without_final_newline():
    parsed = envfile.parse('A=1')
    parsed.set('B', '2')
    assert parsed.dump() == 'A=1\nB=2\n'


@pytest.mark.parametrize('values,fragment', [
    ({'1BAD': 'x'}, 'not a valid .env key'),
    ({'A B': 'x'}, 'not a valid .env key'),
    ({'A': True}, 'boolean'),
    ({'A': ['x']}, 'must be a string'),
    ({'A': 'x\x00'}, 'NUL'),
])
def test_bad_values_name_the_parameter(values, fragment):
    parsed = envfile.parse('A=1\n')
    with pytest.raises(BackupError) as info:
        parsed.apply(values)
    assert info.value.param == 'values'
    assert fragment in info.value.msg


def test_masked_diff_never_contains_values():
    diff = envfile.masked_diff({'A': 'old-secret', 'B': 'same'}, {'A': 'new-secret', 'B': 'same',
                                                                  'C': 'c-secret'})
    text = diff['before'] + diff['after']
    for secret in ('old-secret', 'new-secret', 'same', 'c-secret'):
        assert secret not in text
    assert 'A=********  # changed' in diff['after']
    assert 'C=********' in diff['after']
