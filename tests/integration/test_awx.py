"""The AWX job templates as code (awx/controller.yml) and the execution environment.

Every survey variable must be one the playbook or its role declares, with a compatible type
and default; the templates are launched the way AWX launches them, through ansible-runner
with a private data directory (env/extravars from the survey defaults and answers,
inventory/, project/), against the local inventory shape pointed at servers this test
starts. The EE definition is checked through ansible-builder's own `create` and
`introspect`; building the image needs a container registry this machine cannot reach.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile

import ansible_runner
import pytest
import yaml

from helpers.ansible_runner import BIN, ROOT, ansible_env, run_module
from helpers.awx import CONTROLLER, TEMPLATES, failures, job_dir, ok_tasks, runner_cmdline
from helpers.bluegreen import Site as BlueGreenSite, http_get
from helpers.servers import PostgresCluster, RedisServer
from helpers.sshd import cli_wrapper

# This file's share of the ports (the suites that run at the same time use others).
PG_PORT, REDIS_PORT = 25600, 25601

# Where each survey variable is declared: ('role', role, entry point), ('module', module)
# for a variable a playbook passes straight to a module option of the same name, or
# ('playbook', condition, default) for one the playbook validates itself: the condition
# is one of its assert conditions (the list in it the allowed values) and the default the
# expression it reads the variable with.
DECLARED = {
    ('playbooks/restore.yml', 'target_time'): ('module', 'pg_pitr'),
    ('playbooks/restore.yml', 'restore_to'): (
        'playbook', "codeb_restore_to in ['scratch', 'in_place']", "restore_to | default('scratch')"),
    ('playbooks/rollback.yml', 'project'): ('role', 'bluegreen', 'rollback'),
    ('playbooks/rollback.yml', 'restore_db'): ('role', 'bluegreen', 'rollback'),
    ('playbooks/env.yml', 'project'): ('playbook', 'project is string', None),
    ('playbooks/env.yml', 'version'): ('module', 'env_backup'),
}

SURVEY_TYPES = {'text', 'textarea', 'password', 'integer', 'float', 'multiplechoice', 'multiselect'}
# argument_specs / module option type -> the survey types that answer it
COMPATIBLE = {
    'str': {'text', 'textarea', 'password', 'multiplechoice'},
    'path': {'text', 'textarea'},
    'raw': SURVEY_TYPES,
    'int': {'integer'},
    'float': {'float', 'integer'},
    'bool': {'multiplechoice'},
    'list': {'multiselect'},
}
BOOLEAN_WORDS = {'true', 'false', 'yes', 'no', '1', '0'}


def _documentation(path):
    """The parsed DOCUMENTATION of a module or doc fragment."""
    with open(path) as handle:
        source = handle.read()
    return yaml.safe_load(re.search(r'DOCUMENTATION = r?(\'\'\'|""")(.*?)\1', source, re.S).group(2))


def _module_options(module):
    return _documentation(os.path.join(ROOT, 'plugins', 'modules', module + '.py'))['options']


def _role_options(role, entry_point):
    specs = yaml.safe_load(open(os.path.join(ROOT, 'roles', role, 'meta', 'argument_specs.yml')))
    return specs['argument_specs'][entry_point]['options']


def _asserts(node):
    """Every assert condition in a parsed playbook (plays, tasks, blocks)."""
    if isinstance(node, list):
        for item in node:
            yield from _asserts(item)
    elif isinstance(node, dict):
        assertion = node.get('ansible.builtin.assert')
        if assertion:
            that = assertion['that']
            yield from ([that] if isinstance(that, str) else that)
        for value in node.values():
            if isinstance(value, (list, dict)):
                yield from _asserts(value)


def _survey_questions():
    for template in CONTROLLER['codeb_awx_job_templates']:
        for question in template['survey']:
            yield pytest.param(template, question,
                               id='%s:%s' % (template['playbook'], question['variable']))


def test_every_template_runs_an_existing_playbook_that_parses():
    names = [t['name'] for t in CONTROLLER['codeb_awx_job_templates']]
    assert len(names) == len(set(names)), names
    for template in TEMPLATES.values():
        path = os.path.join(ROOT, template['playbook'])
        proc = subprocess.run([os.path.join(BIN, 'ansible-playbook'), '--syntax-check', path],
                              env=ansible_env(), cwd=ROOT, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, (template['name'], proc.stdout, proc.stderr)
    # one template per user-facing playbook
    for playbook in ('setup_backup.yml', 'backup.yml', 'restore.yml', 'rollback.yml', 'env.yml',
                     'verify_backup.yml'):
        assert 'playbooks/' + playbook in [t['playbook'] for t in TEMPLATES.values()], playbook


@pytest.mark.parametrize('template,question', list(_survey_questions()))
def test_survey_question_is_well_formed(template, question):
    assert set(question) <= {'variable', 'question_name', 'question_description', 'type', 'required',
                             'default', 'choices', 'min', 'max'}, question
    assert question['type'] in SURVEY_TYPES and question['question_name'], question
    assert isinstance(question['required'], bool)
    if question['type'] in ('multiplechoice', 'multiselect'):
        choices = question['choices']
        assert isinstance(choices, list) and all(isinstance(c, str) for c in choices), choices
        assert question.get('default') in choices, question
    if 'default' in question:
        assert isinstance(question['default'], str)
        if 'min' in question:
            assert question['min'] <= len(question['default']) <= question['max'], question
    else:
        # AWX can only launch it without an answer if it has a default
        assert question['required'], question


@pytest.mark.parametrize('template,question', list(_survey_questions()))
def test_survey_variable_is_declared_with_a_compatible_type_and_default(template, question):
    playbook, variable = template['playbook'], question['variable']
    declared = DECLARED.get((playbook, variable))
    assert declared, '%s: no declaration of survey variable %s is known; add it to DECLARED' % (
        playbook, variable)
    text = open(os.path.join(ROOT, playbook)).read()
    if declared[0] == 'playbook':
        _kind, condition, default_expr = declared
        conditions = list(_asserts(yaml.safe_load(text)))
        assert condition in conditions, (condition, conditions)
        allowed = re.search(r'\[.*\]', condition)
        if allowed:
            assert set(question['choices']) == set(ast.literal_eval(allowed.group(0))), question
        if default_expr:
            assert default_expr in text
            assert "default('%s')" % question['default'] in default_expr, (question, default_expr)
        return
    assert re.search(r'\b%s\b' % re.escape(variable), text), (playbook, variable)
    if declared[0] == 'role':
        option = _role_options(declared[1], declared[2])[variable]
        assert 'codeb.backup.' + declared[1] in text and ('tasks_from: %s' % declared[2]) in text
    else:
        option = _module_options(declared[1])[variable]
        assert 'codeb.backup.' + declared[1] in text
        # the playbook hands the variable to the option of the same name
        assert re.search(r'\b%s: "\{\{ (env_)?%s\b' % (variable, variable), text) or \
            re.search(r'env_%s: "\{\{ %s\b' % (variable, variable), text), (playbook, variable)
    kind = option.get('type', 'str')
    assert question['type'] in COMPATIBLE[kind], (variable, kind, question['type'])
    if option.get('required'):
        assert question['required'], (variable, 'required by the declaration')
    if option.get('choices'):
        assert set(question['choices']) <= set(option['choices'])
    if 'default' in option:
        assert 'default' in question, (variable, 'declared default %r' % option['default'])
        if isinstance(option['default'], bool) or kind == 'bool':
            assert question['default'] == str(option['default']).lower()
            assert set(question['choices']) <= BOOLEAN_WORDS
        else:
            assert question['default'] == str(option['default']), (variable, option['default'])


def test_workflow_and_schedules_name_existing_templates():
    workflows = {w['name'] for w in CONTROLLER['codeb_awx_workflows']}
    (workflow,) = CONTROLLER['codeb_awx_workflows']
    nodes = {n['identifier']: n for n in workflow['workflow_nodes']}
    for node in nodes.values():
        assert node['unified_job_template']['type'] == 'job_template'
        assert node['unified_job_template']['name'] in TEMPLATES, node
        for child in node['related']['success_nodes']:
            assert child['identifier'] in nodes, child
    # backup, then (only on success) verify
    assert nodes['backup']['unified_job_template']['name'] == 'codeb.backup: backup'
    assert nodes['backup']['related']['success_nodes'] == [{'identifier': 'verify'}]
    assert TEMPLATES[nodes['verify']['unified_job_template']['name']]['playbook'] == \
        'playbooks/verify_backup.yml'
    rrule = re.compile(r'^DTSTART:\d{8}T\d{6}Z RRULE:FREQ=(DAILY|WEEKLY);INTERVAL=1'
                       r'(;BYDAY=(MO|TU|WE|TH|FR|SA|SU))?$')
    frequencies = {}
    for schedule in CONTROLLER['codeb_awx_schedules']:
        assert schedule['unified_job_template'] in set(TEMPLATES) | workflows, schedule
        match = rrule.match(schedule['rrule'])
        assert match, schedule['rrule']
        frequencies[TEMPLATES[schedule['unified_job_template']]['playbook']] = match.group(1)
    assert frequencies == {'playbooks/backup.yml': 'DAILY', 'playbooks/verify_backup.yml': 'WEEKLY'}


def test_apply_playbook_parses_and_stops_without_its_required_variables(tmp_path):
    apply_yml = os.path.join(ROOT, 'awx', 'apply.yml')
    proc = subprocess.run([os.path.join(BIN, 'ansible-playbook'), '--syntax-check', apply_yml],
                          env=ansible_env(), cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    # Before any controller call: no controller is contacted (none exists here).
    proc = subprocess.run([os.path.join(BIN, 'ansible-playbook'), '-i', 'localhost,', apply_yml],
                          env=ansible_env({'ANSIBLE_STDOUT_CALLBACK': 'default'}), cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert 'give -e codeb_awx_scm_url=' in proc.stdout, proc.stdout
    assert 'ok=0' in proc.stdout and 'failed=1' in proc.stdout


AWX_MODULES = os.path.join(os.path.dirname(os.path.dirname(ansible_runner.__file__)),
                           'ansible_collections', 'awx', 'awx', 'plugins')


def _awx_documentation(module):
    """The options of an awx.awx module (the bundled collection), its auth fragment's too."""
    options = dict(_documentation(os.path.join(AWX_MODULES, 'modules', module + '.py'))['options'])
    options.update(_documentation(os.path.join(AWX_MODULES, 'doc_fragments', 'auth.py'))['options'])
    return options


def test_apply_playbook_gives_the_awx_modules_only_their_options():
    """No controller is reachable here, so the awx.awx modules cannot run: check every
    argument apply.yml and the data in controller.yml give them against the modules'
    own documentation (the bundled awx.awx collection)."""
    (play,) = yaml.safe_load(open(os.path.join(ROOT, 'awx', 'apply.yml')))
    used = set()
    for task in play['tasks']:
        modules = [key for key in task if key.startswith('awx.awx.')]
        if not modules:
            continue
        (module,) = modules
        options = _awx_documentation(module.split('.')[-1])
        unknown = set(task[module]) - set(options)
        assert not unknown, (module, unknown)
        used.add(module)
        if module == 'awx.awx.workflow_job_template':
            node_options = options['workflow_nodes']['suboptions']
            for workflow in CONTROLLER['codeb_awx_workflows']:
                for node in workflow['workflow_nodes']:
                    assert set(node) <= set(node_options), node
                    assert set(node['unified_job_template']) <= \
                        set(node_options['unified_job_template']['suboptions']), node
                    assert set(node['related']) <= set(node_options['related']['suboptions']), node
    assert {'awx.awx.project', 'awx.awx.inventory', 'awx.awx.inventory_source', 'awx.awx.job_template',
            'awx.awx.workflow_job_template', 'awx.awx.schedule', 'awx.awx.execution_environment'} <= used
    controller_options = set(_awx_documentation('job_template'))
    assert set(play['module_defaults']['group/awx.awx.controller']) <= controller_options


# --- the execution environment ---------------------------------------------------------

def _version():
    return yaml.safe_load(open(os.path.join(ROOT, 'galaxy.yml')))['version']


def _pins():
    pins = {}
    for line in open(os.path.join(ROOT, 'requirements.txt')):
        match = re.match(r'^([A-Za-z0-9_.-]+)==(\S+)', line)
        if match:
            pins[match.group(1)] = match.group(2)
    return pins


def test_ansible_builder_create_makes_the_build_context(tmp_path):
    """`ansible-builder create` from the definition as checked in, with the artifact beside
    it as the build expects (`ansible-galaxy collection build` writes it there)."""
    work = tmp_path / 'src'
    work.mkdir()
    shutil.copy(os.path.join(ROOT, 'execution-environment.yml'), str(work))
    subprocess.run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'build', '--output-path',
                    str(work), ROOT], check=True, capture_output=True, text=True)
    artifact = 'codeb-backup-%s.tar.gz' % _version()
    assert os.path.exists(str(work / artifact))
    context = tmp_path / 'context'
    proc = subprocess.run([os.path.join(BIN, 'ansible-builder'), 'create', '-f', 'execution-environment.yml',
                           '-c', str(context)], cwd=str(work), capture_output=True, text=True, check=False,
                          env=dict(os.environ, PATH=BIN + os.pathsep + os.environ.get('PATH', '')))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    containerfile = open(str(context / 'Containerfile')).read()
    pins = _pins()
    assert 'ARG ANSIBLE_INSTALL_REFS="ansible-core==%s ansible-runner==%s"' % (
        pins['ansible-core'], pins['ansible-runner']) in containerfile
    assert re.search(r'^ARG EE_BASE_IMAGE="[^"]+"$', containerfile, re.M), containerfile
    # the collection's dependencies are read from the installed collection when built
    assert 'introspect.py introspect' in containerfile and 'install-from-bindep' in containerfile
    assert os.path.isfile(str(context / '_build' / 'collections' / artifact))
    requirements = yaml.safe_load(open(str(context / '_build' / 'requirements.yml')))
    assert requirements == {'collections': [{'name': 'collections/' + artifact, 'type': 'file'}]}


def test_installed_collection_declares_its_python_and_system_dependencies(tmp_path):
    """What ansible-builder's introspection (the step of the build that reads the
    collections) finds in the installed artifact."""
    subprocess.run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'build', '--output-path',
                    str(tmp_path), ROOT], check=True, capture_output=True, text=True)
    collections = tmp_path / 'collections'
    subprocess.run([os.path.join(BIN, 'ansible-galaxy'), 'collection', 'install', '--no-deps', '-p',
                    str(collections), str(tmp_path / ('codeb-backup-%s.tar.gz' % _version()))],
                   check=True, capture_output=True, text=True,
                   env=ansible_env({'ANSIBLE_COLLECTIONS_PATH': str(collections)}))
    installed = collections / 'ansible_collections' / 'codeb' / 'backup'
    # the controller's objects and the EE build file are used from the checkout, not installed
    assert not (installed / 'awx').exists() and not (installed / 'execution-environment.yml').exists()
    proc = subprocess.run([os.path.join(BIN, 'ansible-builder'), 'introspect', '--sanitize',
                           str(collections)], capture_output=True, text=True, check=True)
    found = yaml.safe_load(proc.stdout)
    python = [re.split(r'[<>=\s]', line)[0] for line in found['python']]
    assert sorted(python) == ['prometheus-client', 'redis'], found
    system = {line.split('#')[0].strip() for line in found['system']}
    for package in ('pgbackrest [platform:dpkg]', 'postgresql-client-15 [platform:dpkg]',
                    'redis-tools [platform:dpkg]', 'zstd [platform:dpkg]',
                    'pgbackrest [platform:rpm]', 'postgresql [platform:rpm]', 'redis [platform:rpm]',
                    'zstd [platform:rpm]'):
        assert package in system, (package, system)
    # exactly the third-party packages the modules' core imports (the status API is a
    # service on the backup host, installed there with Debian's packages, not a module)
    assert {name.replace('_', '-') for name in _third_party_imports()} == set(python)


def _third_party_imports():
    found = set()
    core = os.path.join(ROOT, 'plugins', 'module_utils')
    for base, _dirs, files in os.walk(core):
        if os.path.relpath(base, core).split(os.sep)[0] == 'status':
            continue
        for name in files:
            if not name.endswith('.py'):
                continue
            with open(os.path.join(base, name)) as handle:
                tree = ast.parse(handle.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split('.')[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    found.add(node.module.split('.')[0])
    return {name for name in found if name not in sys.stdlib_module_names
            and name not in ('ansible', 'ansible_collections', '__future__')}


# --- launching the templates as AWX does -----------------------------------------------

@pytest.fixture(scope='module')
def site():
    """The local inventory shape's servers and directories, all the test's own."""
    base = tempfile.mkdtemp(prefix='codeb-test-awx-')
    os.chmod(base, 0o755)
    pg_base = os.path.join(base, 'pg')
    os.mkdir(pg_base)
    pg = PostgresCluster(pg_base, port=PG_PORT)
    pg.start()
    redis_base = os.path.join(base, 'redis')
    os.mkdir(redis_base)
    redis = RedisServer(redis_base, port=REDIS_PORT)
    redis.start()
    try:
        yield {'base': base, 'pg': pg, 'redis': redis}
    finally:
        redis.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)


def _inventory_vars(site):
    base = site['base']
    return {
        # inventories/local: every group is this machine, connection local
        'ansible_connection': 'local',
        'ansible_python_interpreter': sys.executable,
        # ... pointed at the test's servers and directories, never the host's own
        'codeb_metrics_dir': os.path.join(base, 'metrics'),
        'codeb_pg_snapshot_dir': os.path.join(base, 'db-backup', 'postgresql'),
        'codeb_pg_login_unix_socket': site['pg'].socket_dir,
        'codeb_pg_login_port': site['pg'].port,
        'codeb_pg_os_user': 'postgres',
        'redis_backup_dir': os.path.join(base, 'db-backup', 'redis'),
        'redis_backup_login_host': '127.0.0.1',
        'redis_backup_login_port': site['redis'].port,
        # the backup host is this machine: nothing to ship
        'redis_backup_ship': False,
        'postgresql_backup_pg_port': site['pg'].port,
        'postgresql_backup_repo_user': 'postgres',
        # a stanza of this test's own: a scratch restore's directory is named after it
        'stanza': 'awxtest',
        'env_backup_root': os.path.join(base, 'env-backup'),
        'env_backup_metrics_dir': os.path.join(base, 'metrics'),
        'env_backup_files': [{'project': 'awxapp', 'path': os.path.join(base, 'awxapp.env')}],
    }


def launch(site, name, tmp, answers=None, inventory_vars=None, through_survey=True):
    """Launch job template ``name`` as AWX does (helpers.awx.job_dir) against the local
    inventory shape plus ``inventory_vars``, run by ansible-runner."""
    hosts = {'localhost': None}
    inventory = {'all': {'vars': dict(_inventory_vars(site), **(inventory_vars or {})), 'children': {
        group: {'hosts': hosts} for group in ('codeb_storage', 'codeb_backup', 'codeb_app')}}}
    data, extravars = job_dir(name, tmp, answers, through_survey, inventory=inventory)
    result = ansible_runner.run(private_data_dir=data, playbook=TEMPLATES[name]['playbook'],
                                quiet=True, cmdline=runner_cmdline(name), timeout=600)
    events = list(result.events)
    return result, events, extravars


def test_backup_template_snapshots_the_sites_database_and_redis(site, tmp_path):
    site['pg'].create_database('awxshop')
    site['pg'].psql('CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)', database='awxshop')
    site['redis'].client().set('awx:key', 'v')
    # no survey: the databases come from the inventory, as on a site
    result, events, extravars = launch(site, 'codeb.backup: backup', tmp_path,
                                       inventory_vars={'codeb_pg_databases': ['awxshop']})
    assert extravars == {}
    assert result.status == 'successful' and result.rc == 0, failures(events)
    assert 'Snapshot each database' in ok_tasks(events)
    assert 'Snapshot Redis (RDB + AOF)' in ok_tasks(events)
    stats = [e for e in events if e['event'] == 'playbook_on_stats'][-1]['event_data']
    assert not stats['failures'] and stats['changed'].get('localhost', 0) >= 2, stats
    dumps = os.listdir(os.path.join(site['base'], 'db-backup', 'postgresql'))
    assert [d for d in dumps if d.startswith('awxshop-') and '.dump' in d], dumps
    redis_files = os.listdir(os.path.join(site['base'], 'db-backup', 'redis'))
    assert [f for f in redis_files if f.endswith('.rdb')], redis_files


def test_env_restore_template_writes_the_version_back(site, tmp_path):
    env_file = os.path.join(site['base'], 'awxapp.env')
    store = dict(project='awxapp', root=_inventory_vars(site)['env_backup_root'],
                 metrics_dir=str(tmp_path / 'metrics'))
    recorded = run_module('codeb.backup.env_backup', dict(store, content='MODE=first\nKEY=one\n'))
    assert recorded['changed'] and not recorded.get('failed'), recorded
    with open(env_file, 'w') as handle:
        handle.write('MODE=broken\n')
    result, events, extravars = launch(site, 'codeb.backup: env restore', tmp_path,
                                       answers={'project': 'awxapp', 'version': 'master'})
    assert extravars == {'action': 'restore', 'project': 'awxapp', 'version': 'master'}
    assert result.status == 'successful' and result.rc == 0, failures(events)
    assert "Restore: write the version to the app's .env atomically" in ok_tasks(events)
    assert open(env_file).read() == 'MODE=first\nKEY=one\n'
    # the live file the restore replaced was saved first: nothing the app ran is lost
    info = run_module('codeb.backup.env_backup_info', dict(project='awxapp', root=store['root']))
    versions = info['versions']
    assert len(versions) >= 2, versions


def _failed_with(result, events, task, message):
    assert result.status == 'failed' and result.rc != 0, (result.status, result.rc)
    failed = failures(events)
    # the first failure is the check (a rescue may report it again after it)
    assert failed and failed[0]['task'] == task, failed
    msg = failed[0]['res']['msg']
    assert message in msg, msg
    return msg


def test_env_restore_template_refuses_an_unknown_project(site, tmp_path):
    result, events, _extravars = launch(site, 'codeb.backup: env restore', tmp_path,
                                        answers={'project': 'nosuchapp'})
    msg = _failed_with(result, events, "Check that the app's .env file is known",
                       'no .env file for nosuchapp/production on localhost')
    assert 'env_backup_files' in msg


def test_rollback_template_refuses_an_unknown_project(site, tmp_path):
    """The local inventory shape has no blue-green project yet: the survey's project is
    answered with one, and the playbook's own message reaches the job's events."""
    result, events, extravars = launch(site, 'codeb.backup: rollback', tmp_path,
                                       answers={'project': 'worb'})
    assert extravars == {'project': 'worb', 'restore_db': 'false'}
    msg = _failed_with(result, events, 'Check the project is served blue-green on this host',
                       'unknown project worb: it is not in bluegreen_projects of localhost')
    assert '(known: none)' in msg


def test_rollback_refuses_a_restore_db_that_is_not_a_boolean(site, tmp_path):
    """The survey offers only false/true; from the command line anything can come, and the
    role refuses it before anything is changed."""
    project = {'name': 'worb', 'listen': '127.0.0.1:25602', 'blue': ['127.0.0.1:25603'],
               'green': ['127.0.0.1:25604']}
    result, events, _extravars = launch(site, 'codeb.backup: rollback', tmp_path,
                                        answers={'project': 'worb', 'restore_db': 'maybe'},
                                        inventory_vars={'bluegreen_projects': [project]},
                                        through_survey=False)
    _failed_with(result, events, 'Step 1/5 preflight: check the restore options are booleans',
                 'restore_db must be true or false; got "maybe". Nothing was changed.')


@pytest.mark.parametrize('target_time,message', [
    ('yesterday', "target_time must look like 'YYYY-MM-DD HH:MM:SS'"),
    ('2026-01-07T10:30', "target_time must look like 'YYYY-MM-DD HH:MM:SS'"),
    ('2026-13-01 10:00:00', "target_time '2026-13-01 10:00:00' is not a valid time"),
])
def test_restore_template_refuses_a_malformed_target_time(site, tmp_path, target_time, message):
    result, events, extravars = launch(site, 'codeb.backup: restore', tmp_path,
                                       answers={'target_time': target_time})
    assert extravars == {'target_time': target_time, 'restore_to': 'scratch'}
    _failed_with(result, events,
                 'Check target, stanza and recovery window against the repository (changes nothing)',
                 message)


def test_restore_refuses_an_unknown_restore_to(site, tmp_path):
    """Outside the survey's choices, as the command line may give it."""
    result, events, _extravars = launch(site, 'codeb.backup: restore', tmp_path,
                                        answers={'target_time': '2026-01-07 10:30:00',
                                                 'restore_to': 'elsewhere'},
                                        through_survey=False)
    _failed_with(result, events, 'Check restore_to',
                 'restore_to must be scratch or in_place; got elsewhere')


def test_rollback_template_rolls_back_with_the_database(pg_cluster, site, tmp_path):
    """A project deployed twice on real nginx, apps and PostgreSQL (the blue-green suite's
    site), rolled back by the template with the survey's restore_db answer "true" (a
    string, as every survey answer is)."""
    bluegreen = BlueGreenSite(pg_cluster, 'awxroll')
    try:
        bluegreen.start()
        bluegreen.deploy('v1')
        v1_rows = bluegreen.rows()
        bluegreen.deploy('v2')
        assert http_get(bluegreen.port) == 'v2' and bluegreen.rows() != v1_rows
        inventory_vars = {k: v for k, v in bluegreen.vars.items() if k != 'project'}
        result, events, extravars = launch(site, 'codeb.backup: rollback', tmp_path,
                                           answers={'project': 'awxroll', 'restore_db': 'true'},
                                           inventory_vars=inventory_vars)
        assert extravars == {'project': 'awxroll', 'restore_db': 'true'}
        assert result.status == 'successful' and result.rc == 0, failures(events)
        assert http_get(bluegreen.port) == 'v1'
        assert bluegreen.rows() == v1_rows
        state = bluegreen.state()
        assert state['activeSlot'] == 'blue' and state['history'][-1]['restored'] == ['db']
    finally:
        bluegreen.stop()


def test_verify_template_drills_what_the_backup_template_took_and_fails_on_damage(site, tmp_path):
    """The "backup then verify" workflow's two jobs: a backup, then the drills of the local
    shape (pg_snapshot on the storage group, redis and env on the backup group) restore
    what it took into scratch space and pass; a flipped byte in the snapshot fails the
    verify job with the drill's message naming the file."""
    site['pg'].create_database('awxverify')
    site['pg'].psql('CREATE TABLE v (id int); INSERT INTO v SELECT generate_series(1, 77)',
                    database='awxverify')
    site['redis'].client().set('awx:verify', 'v')
    backup_vars = {'codeb_pg_databases': ['awxverify']}
    result, events, _extravars = launch(site, 'codeb.backup: backup', tmp_path, inventory_vars=backup_vars)
    assert result.status == 'successful', failures(events)
    store = dict(project='awxverify', root=_inventory_vars(site)['env_backup_root'],
                 metrics_dir=str(tmp_path / 'metrics'))
    assert not run_module('codeb.backup.env_backup', dict(store, content='K=v\n')).get('failed')
    pg_dir = _inventory_vars(site)['codeb_pg_snapshot_dir']
    drill_vars = {
        'restore_drill_cli_path': cli_wrapper(str(tmp_path / 'codeb-backup')),
        'restore_drill_scratch_path': os.path.join(site['base'], 'drill'),
        'restore_drill_pg_backup_dir': pg_dir,
        'restore_drill_pg_databases': ['awxverify'],
        'restore_drill_redis_backup_dir': _inventory_vars(site)['redis_backup_dir'],
        'restore_drill_env_root': store['root'],
        'restore_drill_env_targets': ['awxverify/production'],
        'restore_drill_metrics_dir': os.path.join(site['base'], 'metrics'),
    }
    result, events, extravars = launch(site, 'codeb.backup: verify backup', tmp_path,
                                       inventory_vars=drill_vars)
    assert extravars == {}
    assert result.status == 'successful' and result.rc == 0, failures(events)
    assert 'Fail when a drill failed' in ok_tasks(events)
    summary = [e['event_data']['res']['msg'] for e in events if e['event'] == 'runner_on_ok'
               and e['event_data']['task'] == "Show each kind's outcome"][0]
    for kind in ('pg_snapshot: passed', 'redis: passed', 'env: passed'):
        assert kind in summary, summary
    (snapshot,) = [f for f in os.listdir(pg_dir) if f.startswith('awxverify-') and '.dump' in f]
    with open(os.path.join(pg_dir, snapshot), 'r+b') as handle:
        handle.seek(os.path.getsize(os.path.join(pg_dir, snapshot)) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result, events, _extravars = launch(site, 'codeb.backup: verify backup', tmp_path,
                                        inventory_vars=drill_vars)
    msg = _failed_with(result, events, 'Fail when a drill failed', snapshot)
    assert 'pg_snapshot' in msg, msg
