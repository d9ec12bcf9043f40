"""Run the collection's modules and playbooks through real ansible-playbook.

Results come back through the ``ansible.posix.json`` callback, so tests assert on the
module's actual return values, exactly as a playbook sees them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def ansible_env(extra=None):
    env = dict(os.environ)
    env.update({
        'ANSIBLE_CONFIG': os.path.join(ROOT, 'ansible.cfg'),
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(ROOT, '.collections'),
        'ANSIBLE_STDOUT_CALLBACK': 'ansible.posix.json',
        'ANSIBLE_NOCOLOR': '1',
        'PATH': BIN + os.pathsep + env.get('PATH', ''),
    })
    env.update(extra or {})
    return env


def run_playbook(playbook, extra_vars=None, inventory=None, check=False, diff=False,
                 verbosity=0, env=None, json_output=True):
    """Run ``playbook``; return ``(returncode, parsed json or raw stdout, stderr)``."""
    argv = [os.path.join(BIN, 'ansible-playbook'), playbook,
            '-i', inventory or os.path.join(ROOT, 'inventories', 'local', 'hosts.yml')]
    if extra_vars:
        argv += ['-e', json.dumps(extra_vars)]
    if check:
        argv.append('--check')
    if diff:
        argv.append('--diff')
    if verbosity:
        argv.append('-' + 'v' * verbosity)
    extra_env = dict(env or {})
    if not json_output:
        extra_env['ANSIBLE_STDOUT_CALLBACK'] = 'default'
    proc = subprocess.run(argv, env=ansible_env(extra_env), capture_output=True, text=True,
                          cwd=ROOT, check=False)
    out = proc.stdout
    if json_output:
        out = json.loads(out[out.index('{'):])
    return proc.returncode, out, proc.stderr


def run_module(module, args, check=False, diff=False, env=None):
    """Run one module on localhost; return its result dict (``failed`` set on failure)."""
    play = [{
        'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
        'vars': {'ansible_python_interpreter': sys.executable},
        'tasks': [{'name': 'module under test', module: args}],
    }]
    with tempfile.NamedTemporaryFile('w', suffix='.yml', delete=False) as handle:
        json.dump(play, handle)
        path = handle.name
    try:
        _rc, out, stderr = run_playbook(path, inventory='localhost,', check=check, diff=diff,
                                        env=env)
    finally:
        os.unlink(path)
    try:
        return out['plays'][0]['tasks'][0]['hosts']['localhost']
    except (KeyError, IndexError, TypeError):
        raise AssertionError('no module result; stderr: %s' % stderr)


def apply_role(tmp_path, role, role_vars, check=False, diff=False):
    """Apply ``codeb.backup.<role>`` to localhost with ``role_vars`` as extra vars, through a
    play written to ``tmp_path``; return what :func:`run_playbook` returns."""
    play = [{'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
             'vars': {'ansible_python_interpreter': sys.executable},
             'roles': [{'role': 'codeb.backup.' + role}]}]
    path = os.path.join(str(tmp_path), 'play-%s.yml' % role)
    with open(path, 'w') as handle:
        json.dump(play, handle)
    return run_playbook(path, inventory='localhost,', extra_vars=role_vars, check=check, diff=diff)
