"""The host_cli role installs a working `codeb-backup` command built from module_utils."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from helpers.ansible_runner import ROOT, run_playbook


def _apply_role(tmp_path, **extra):
    play = [{'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
             'vars': {'ansible_python_interpreter': sys.executable},
             'roles': [{'role': 'codeb.backup.host_cli'}]}]
    path = tmp_path / 'play.yml'
    path.write_text(yaml.safe_dump(play))
    return run_playbook(str(path), inventory='localhost,', extra_vars=dict({
        'host_cli_lib_dir': str(tmp_path / 'lib'),
        'host_cli_path': str(tmp_path / 'bin' / 'codeb-backup'),
    }, **extra))


def _stats(out):
    return out['stats']['localhost']


def test_role_installs_command_idempotently(tmp_path):
    (tmp_path / 'bin').mkdir()
    rc, out, err = _apply_role(tmp_path)
    assert rc == 0, err
    assert _stats(out)['changed'] >= 2
    rc, out, err = _apply_role(tmp_path)
    assert rc == 0, err
    assert _stats(out)['changed'] == 0, 'second run must report changed=0'

    installed = tmp_path / 'lib' / 'ansible_collections' / 'codeb' / 'backup' / 'plugins' / 'module_utils'
    shipped = sorted(n for n in os.listdir(os.path.join(ROOT, 'plugins', 'module_utils')) if n.endswith('.py'))
    assert sorted(os.listdir(installed)) == shipped

    command = str(tmp_path / 'bin' / 'codeb-backup')
    assert os.access(command, os.X_OK)
    # The command runs under the system Python with only the installed copy of the core.
    proc = subprocess.run([command, '--help'], capture_output=True, text=True, check=False,
                          env={'PATH': '/usr/bin:/bin'})
    assert proc.returncode == 0, proc.stderr
    assert 'codeb-backup' in proc.stdout


def test_outdated_stamp_reinstalls_the_core(tmp_path):
    """The copy is skipped only while the stamp matches the collection's core: an old
    stamp (another release was installed) brings every file back."""
    (tmp_path / 'bin').mkdir()
    rc, _out, err = _apply_role(tmp_path, host_cli_install_packages=False)
    assert rc == 0, err
    installed = tmp_path / 'lib' / 'ansible_collections' / 'codeb' / 'backup' / 'plugins' / 'module_utils'
    original = (installed / 'cli.py').read_bytes()
    (installed / 'cli.py').unlink()
    (tmp_path / 'lib' / 'core.sha256').write_text('0' * 64 + '\n')
    rc, out, err = _apply_role(tmp_path, host_cli_install_packages=False)
    assert rc == 0, err
    assert _stats(out)['changed'] >= 2  # the file and the stamp
    assert (installed / 'cli.py').read_bytes() == original


def test_command_rejects_unknown_subcommand(tmp_path):
    (tmp_path / 'bin').mkdir()
    rc, _out, err = _apply_role(tmp_path, host_cli_install_packages=False)
    assert rc == 0, err
    proc = subprocess.run([str(tmp_path / 'bin' / 'codeb-backup'), 'no-such-command'],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert 'invalid choice' in proc.stderr


def test_role_refuses_wrong_type(tmp_path):
    rc, out, _err = _apply_role(tmp_path, host_cli_install_packages='maybe')
    assert rc != 0
    text = json.dumps(out)
    assert 'host_cli_install_packages' in text
    assert not (tmp_path / 'lib').exists()
