"""The host command answers in JSON, whatever went wrong."""

from __future__ import annotations

import errno
import json

from ansible_collections.codeb.backup.plugins.module_utils import cli


def test_cli_prints_json_and_exits_1_for_any_exception(capsys, monkeypatch):
    def boom(_args):
        raise OSError(errno.EROFS, 'Read-only file system', '/opt/codeb')
    parser = cli.build_parser()
    monkeypatch.setattr(cli, 'build_parser', lambda: parser)
    for action in parser._subparsers._group_actions:
        action.choices['pg-snapshot-list'].set_defaults(handler=boom)
    assert cli.main(['pg-snapshot-list']) == 1
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result['failed'] is True and 'read-only' in result['msg']
    assert err == '', 'one result: the JSON on stdout, nothing else'
