"""The option spec: one definition gives the argument_spec and the host command's flags."""

from __future__ import annotations

import argparse

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import spec

OPTIONS = (
    spec.Option('backup_dir', type='path', default='/srv/b', help='where snapshots go'),
    spec.Option('login_unix_socket', type='path', flag_aliases=('socket',)),
    spec.Option('database', required=True, aliases=('db',)),
    spec.Option('jobs', type='int', default=1),
    spec.Option('tls', type='bool', default=False),
    spec.Option('validate_certs', type='bool', default=True),
    spec.Option('state', choices=('present', 'pruned'), default='present'),
    spec.Option('login_password', no_log=True),
    spec.Option('exclude', type='list', elements='str', default=()),
)


def _parse(argv):
    parser = argparse.ArgumentParser()
    spec.add_arguments(parser, OPTIONS)
    return spec.params_from_args(parser.parse_args(argv), OPTIONS)


def test_argument_spec_carries_every_field():
    result = spec.argument_spec(OPTIONS)
    assert result['backup_dir'] == dict(type='path', default='/srv/b')
    assert result['database'] == dict(type='str', required=True, aliases=['db'])
    assert result['login_password'] == dict(type='str', no_log=True)
    assert result['state'] == dict(type='str', default='present', choices=['present', 'pruned'])
    assert result['exclude'] == dict(type='list', elements='str', default=[])
    assert result['tls'] == dict(type='bool', default=False)


def test_defaults_reach_the_core_from_the_command_line():
    params = _parse(['--db', 'app'])
    assert params == dict(backup_dir='/srv/b', login_unix_socket=None, database='app', jobs=1,
                          tls=False, validate_certs=True, state='present', login_password=None,
                          exclude=[])


def test_flags_aliases_types_and_booleans():
    params = _parse(['--database', 'app', '--socket', '/run/r.sock', '--jobs', '4', '--tls',
                     '--no-validate-certs', '--exclude', 'a', '--exclude', 'b'])
    assert params['login_unix_socket'] == '/run/r.sock'
    assert params['jobs'] == 4
    assert params['tls'] is True and params['validate_certs'] is False
    assert params['exclude'] == ['a', 'b']


def test_a_secret_is_never_a_flag():
    with pytest.raises(SystemExit):
        _parse(['--database', 'app', '--login-password', 'x'])


def test_choices_and_types_are_checked_on_the_command_line():
    with pytest.raises(SystemExit):
        _parse(['--database', 'app', '--state', 'gone'])
    with pytest.raises(SystemExit):
        _parse(['--database', 'app', '--jobs', 'two'])


def test_an_option_defined_twice_is_refused():
    with pytest.raises(ValueError, match='defined twice'):
        spec.argument_spec(OPTIONS + (spec.Option('jobs', type='int'),))


def test_replace_changes_one_field():
    other = OPTIONS[3].replace(default=2)
    assert other.default == 2 and OPTIONS[3].default == 1 and other.name == 'jobs'
