"""Unit tests of the pg-snapshot host command surface."""

from __future__ import annotations

import argparse
import json

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import cli
from ansible_collections.codeb.backup.plugins.module_utils.postgres import cli as pg_cli

from .helpers import write_snapshots


def test_cli_surface_never_takes_a_password_argument(tmp_path):
    parser = argparse.ArgumentParser()
    pg_cli.register_cli(parser.add_subparsers())
    args = parser.parse_args(['pg-snapshot', '--database', 'worb', '--state', 'verified'])
    assert args.handler is pg_cli._cli_snapshot and args.state == 'verified'
    with pytest.raises(SystemExit):
        parser.parse_args(['pg-snapshot', '--database', 'worb', '--login-password', 'x'])
    assert 'postgres.cli' in cli.SUBSYSTEMS


def test_cli_list_through_the_host_command_parser(tmp_path, capsys):
    made = write_snapshots(tmp_path, 'worb', [2, 1])
    assert cli.main(['pg-snapshot-list', '--backup-dir', str(tmp_path), '--database', 'worb']) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s['file'] for s in out['snapshots']] == list(reversed(made))
    assert out['size_bytes'] == 20 and out['changed'] is False
    assert cli.main(['pg-snapshot-list', '--backup-dir', str(tmp_path), '--database', '../x']) == 1
    assert json.loads(capsys.readouterr().out)['param'] == 'database'
