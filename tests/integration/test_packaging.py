"""The collection as users get it: ``ansible-galaxy collection build`` and ``install``.

The built artifact must hold what users run (modules, roles, playbooks, docs) and none of
the development files, declare the collections the roles call, and its action groups must
let ``module_defaults`` set connection options once, run from the installed copy against
real servers.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile

import pytest
import yaml

from helpers.ansible_runner import BIN, ROOT, ansible_env, run_playbook
from helpers.servers import free_port

# Top-level entries that must never be in the artifact (development and local state).
DEVELOPMENT = ('tests', 'molecule', 'scripts', 'bench', '.ci', '.venv', '.venv-sanity',
               '.collections', 'Makefile', 'requirements.txt', 'ansible.cfg', '.hypothesis')


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp('dist')
    subprocess.run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'build', '--output-path',
                    str(out), ROOT], check=True, capture_output=True, text=True)
    artifacts = [name for name in os.listdir(out) if name.endswith('.tar.gz')]
    assert len(artifacts) == 1, artifacts
    return str(out / artifacts[0])


@pytest.fixture(scope='module')
def installed(built, tmp_path_factory):
    """The artifact installed into a clean collections path (the dependencies come from the
    `ansible` package's bundled collections: Galaxy is not reachable from CI)."""
    path = tmp_path_factory.mktemp('collections')
    # With the checkout's collections path configured, galaxy would find codeb.backup there
    # and install nothing.
    subprocess.run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'install', '--no-deps',
                    '-p', str(path), built], check=True, capture_output=True, text=True,
                   env=ansible_env({'ANSIBLE_COLLECTIONS_PATH': str(path)}))
    assert os.path.isfile(os.path.join(str(path), 'ansible_collections', 'codeb', 'backup',
                                       'meta', 'runtime.yml'))
    return str(path)


def test_artifact_holds_what_users_run_and_no_development_files(built):
    with tarfile.open(built) as tar:
        names = tar.getnames()
    top = set(name.split('/')[0] for name in names)
    assert not top & set(DEVELOPMENT), sorted(top & set(DEVELOPMENT))
    assert not [n for n in names if n.endswith('.pyc') or '__pycache__' in n.split('/')]
    assert not [n for n in names if n.startswith('changelogs/fragments/')]
    for needed in ('plugins/modules/pg_snapshot.py', 'plugins/modules/slot_rollback.py',
                   'plugins/module_utils/cli.py', 'roles/postgresql_backup/meta/argument_specs.yml',
                   'playbooks/setup-backup.yml', 'playbooks/rollback.yml', 'meta/runtime.yml',
                   'docs/architecture.md', 'README.md', 'CHANGELOG.md', 'MANIFEST.json'):
        assert needed in names, needed


def test_manifest_declares_the_collections_the_roles_call(built):
    with tarfile.open(built) as tar:
        manifest = json.load(tar.extractfile('MANIFEST.json'))
    dependencies = manifest['collection_info']['dependencies']
    used = set()
    for base, _dirs, files in os.walk(os.path.join(ROOT, 'roles')):
        for name in files:
            if name.endswith('.yml'):
                with open(os.path.join(base, name)) as handle:
                    text = handle.read()
                for collection in ('community.postgresql', 'ansible.posix', 'community.general'):
                    if collection + '.' in text:
                        used.add(collection)
    assert used and used <= set(dependencies), (used, dependencies)
    with open(os.path.join(ROOT, 'galaxy.yml')) as handle:
        assert yaml.safe_load(handle)['dependencies'] == dependencies


def _module_defaults_play(group, defaults, task):
    return [{'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
             'vars': {'ansible_python_interpreter': os.path.join(BIN, 'python')},
             'module_defaults': {'group/codeb.backup.%s' % group: defaults},
             'tasks': [dict({'name': 'module under test'}, **task)]}]


def _run_installed(installed, play, tmp_path):
    path = tmp_path / 'play.yml'
    path.write_text(json.dumps(play))
    # Only the installed copy: the checkout's .collections is not on the path.
    _rc, out, stderr = run_playbook(str(path), inventory='localhost,',
                                    env={'ANSIBLE_COLLECTIONS_PATH': installed})
    try:
        return out['plays'][0]['tasks'][0]['hosts']['localhost']
    except (KeyError, IndexError, TypeError):
        raise AssertionError('no module result; stderr: %s' % stderr)


def test_redis_group_defaults_reach_the_installed_module(installed, redis_server, tmp_path):
    task = {'codeb.backup.redis_snapshot': {'backup_dir': str(tmp_path / 'redis'),
                                            'metrics_dir': str(tmp_path / 'metrics')}}
    done = _run_installed(installed, _module_defaults_play(
        'redis', {'login_host': '127.0.0.1', 'login_port': redis_server.port}, task), tmp_path)
    assert not done.get('failed') and done['changed'] is True, done
    assert len(done['files']) == 2
    # The same task with the group's port pointing nowhere fails: the defaults are what the
    # module used (not a Redis that happens to listen on the default port).
    refused = _run_installed(installed, _module_defaults_play(
        'redis', {'login_host': '127.0.0.1', 'login_port': free_port()}, task), tmp_path)
    assert refused.get('failed'), refused


def test_postgres_group_defaults_reach_the_installed_module(installed, pg_cluster, tmp_path):
    pg_cluster.create_database('packaging_db')
    task = {'codeb.backup.pg_snapshot': {'database': 'packaging_db',
                                         'backup_dir': str(tmp_path / 'pg'),
                                         'metrics_dir': str(tmp_path / 'metrics')}}
    defaults = {'login_unix_socket': pg_cluster.socket_dir, 'login_port': pg_cluster.port,
                'login_user': pg_cluster.user}
    done = _run_installed(installed, _module_defaults_play('postgres', defaults, task), tmp_path)
    assert not done.get('failed') and done['changed'] is True, done
    assert done['database'] == 'packaging_db' and done['size_bytes'] > 0
    refused = _run_installed(installed, _module_defaults_play(
        'postgres', dict(defaults, login_port=free_port()), task), tmp_path)
    assert refused.get('failed'), refused


def test_every_playbook_runs_by_name_from_the_installed_collection(installed, tmp_path):
    """``ansible-playbook codeb.backup.<name>`` needs an identifier name; the hyphenated
    names users and docs know stay as thin imports of the identifier-named playbook."""
    playbooks = os.path.join(installed, 'ansible_collections', 'codeb', 'backup', 'playbooks')
    names = sorted(name[:-4] for name in os.listdir(playbooks) if name.endswith('.yml'))
    assert 'setup_backup' in names and 'rollback' in names, names
    for name in names:
        if not name.isidentifier():
            with open(os.path.join(playbooks, name + '.yml')) as handle:
                plays = yaml.safe_load(handle)
            assert [play.get('ansible.builtin.import_playbook') for play in plays] == \
                [name.replace('-', '_') + '.yml'], (name, plays)
            continue
        proc = subprocess.run(
            [os.path.join(BIN, 'ansible-playbook'), 'codeb.backup.' + name, '--syntax-check',
             '-i', os.path.join(ROOT, 'inventories', 'local', 'hosts.yml')],
            env=ansible_env({'ANSIBLE_COLLECTIONS_PATH': installed, 'ANSIBLE_STDOUT_CALLBACK': 'default'}),
            capture_output=True, text=True, cwd=str(tmp_path), check=False)
        assert proc.returncode == 0, (name, proc.stdout, proc.stderr)
