"""The host_cli role installs a working `codeb-backup` command built from module_utils."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import yaml

from helpers.ansible_runner import ROOT, run_playbook


def _apply_role(tmp_path, env=None, tasks=None, **extra):
    play = [{'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
             'vars': {'ansible_python_interpreter': sys.executable},
             'roles': [{'role': 'codeb.backup.host_cli'}], 'tasks': tasks or []}]
    path = tmp_path / 'play.yml'
    path.write_text(yaml.safe_dump(play))
    return run_playbook(str(path), inventory='localhost,', env=env, extra_vars=dict({
        'host_cli_lib_dir': str(tmp_path / 'lib'),
        'host_cli_path': str(tmp_path / 'bin' / 'codeb-backup'),
    }, **extra))


def _tree(top):
    """Every file under ``top`` (any depth, without Python's caches), relative and sorted."""
    found = []
    for where, dirs, names in os.walk(top):
        if '__pycache__' in dirs:
            dirs.remove('__pycache__')
        found.extend(os.path.relpath(os.path.join(where, name), top) for name in names)
    return sorted(found)


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
    # and with the stamp current it does not even look at the files (one call per file)
    copy = [task['hosts']['localhost'] for play in out['plays'] for task in play['tasks']
            if task['task']['name'].endswith('Install the collection\'s core (module_utils) for the host command')]
    assert len(copy) == 1 and copy[0].get('skipped') is True, copy

    installed = tmp_path / 'lib' / 'ansible_collections' / 'codeb' / 'backup' / 'plugins' / 'module_utils'
    core = os.path.join(ROOT, 'plugins', 'module_utils')
    assert _tree(installed) == [n for n in _tree(core) if n.endswith('.py')]

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


PROBE_CLI = """from __future__ import annotations


def _probe(_args):
    return {'probe': 'nested'}


def register_cli(subparsers):
    subparsers.add_parser('probe', help='answers from a nested subpackage').set_defaults(
        handler=_probe)
"""


def _collection_with_subpackage(tmp_path):
    """A copy of the collection whose core has a two-level subpackage that contributes a
    sub-command, as the subsystems' packages do; return its ANSIBLE_COLLECTIONS_PATH."""
    base = tmp_path / 'collections'
    copy = base / 'ansible_collections' / 'codeb' / 'backup'
    ignore = shutil.ignore_patterns('__pycache__')
    for name in ('plugins', 'roles', 'meta'):
        shutil.copytree(os.path.join(ROOT, name), copy / name, ignore=ignore)
    shutil.copy(os.path.join(ROOT, 'galaxy.yml'), copy / 'galaxy.yml')
    core = copy / 'plugins' / 'module_utils'
    (core / 'probe' / 'deep').mkdir(parents=True)
    (core / 'probe' / '__init__.py').write_text('')
    (core / 'probe' / 'deep' / '__init__.py').write_text('')
    (core / 'probe' / 'deep' / 'cli.py').write_text(PROBE_CLI)
    cli = (core / 'cli.py').read_text()
    cli, found = re.subn(r'SUBSYSTEMS = \(\n', "SUBSYSTEMS = (\n    'probe.deep.cli',\n", cli)
    assert found == 1
    (core / 'cli.py').write_text(cli)
    shipped = [name for name in _tree(core) if name.endswith('.py')]
    return {'ANSIBLE_COLLECTIONS_PATH': str(base)}, shipped


def test_core_with_subpackages_is_installed_recursively_and_old_layouts_removed(tmp_path):
    (tmp_path / 'bin').mkdir()
    env, shipped = _collection_with_subpackage(tmp_path)
    assert 'probe/deep/cli.py' in shipped
    show = [{'name': 'show the file list', 'ansible.builtin.debug': {'var': 'host_cli_core_files'}}]
    rc, out, err = _apply_role(tmp_path, env=env, tasks=show, host_cli_install_packages=False)
    assert rc == 0, err
    assert out['plays'][0]['tasks'][-1]['hosts']['localhost']['host_cli_core_files'] == shipped

    installed = tmp_path / 'lib' / 'ansible_collections' / 'codeb' / 'backup' / 'plugins' / 'module_utils'
    assert _tree(installed) == shipped
    command = str(tmp_path / 'bin' / 'codeb-backup')
    # The system Python with only the installed core: the sub-command comes from the
    # nested package.
    proc = subprocess.run([command, 'probe'], capture_output=True, text=True, check=False,
                          env={'PATH': '/usr/bin:/bin'})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {'probe': 'nested'}
    assert (installed / '__pycache__').is_dir()  # the command ran from the installed copy

    # An older release: another stamp, a nested file missing, a module at the top level that
    # this layout moved into a package (it would shadow nothing here but must not linger),
    # and a whole package this layout no longer has.
    original = (installed / 'probe' / 'deep' / 'cli.py').read_bytes()
    (installed / 'probe' / 'deep' / 'cli.py').unlink()
    (installed / 'probe.py').write_text('raise ImportError("old layout")\n')
    (installed / 'oldpkg' / '__pycache__').mkdir(parents=True)
    (installed / 'oldpkg' / '__init__.py').write_text('')
    (installed / 'oldpkg' / '__pycache__' / '__init__.cpython-311.pyc').write_bytes(b'')
    (tmp_path / 'lib' / 'core.sha256').write_text('0' * 64 + '\n')
    rc, out, err = _apply_role(tmp_path, env=env, host_cli_install_packages=False)
    assert rc == 0, err
    assert (installed / 'probe' / 'deep' / 'cli.py').read_bytes() == original
    assert not (installed / 'probe.py').exists()
    assert not (installed / 'oldpkg').exists()
    assert (installed / '__pycache__').is_dir()  # Python's cache of a kept package stays
    proc = subprocess.run([command, 'probe'], capture_output=True, text=True, check=False,
                          env={'PATH': '/usr/bin:/bin'})
    assert proc.returncode == 0, proc.stderr

    # Current stamp, nothing stale, caches left by the command's runs: nothing to do.
    rc, out, err = _apply_role(tmp_path, env=env, host_cli_install_packages=False)
    assert rc == 0, err
    assert _stats(out)['changed'] == 0, 'second run must report changed=0'
