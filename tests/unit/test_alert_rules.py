"""The monitoring role's alert rules: promtool accepts them, every promtool unit test in
tests/promtool passes against the file the role's defaults render, and every alert carries
what an on-call reader needs (severity, summary, description, a runbook section)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from helpers.ansible_runner import run_playbook
from helpers.monitoring import DEFAULTS, RULES_TEMPLATE, RUNBOOK, alerts, render_rules

PROMTOOL = shutil.which('promtool')
TESTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'promtool')
TEST_FILES = sorted(glob.glob(os.path.join(TESTS_DIR, '*.test.yml')))
RULES_NAME = 'codeb-backup.rules.yml'


def promtool(*args, cwd=None):
    assert PROMTOOL, 'promtool is not on PATH: install the Debian package prometheus (make deps)'
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, check=False)


def write_suite(directory, rules_text):
    """The rendered rules next to copies of the promtool tests (they name it relatively)."""
    with open(os.path.join(directory, RULES_NAME), 'w') as handle:
        handle.write(rules_text)
    for path in TEST_FILES:
        shutil.copy(path, directory)
    return [os.path.basename(path) for path in TEST_FILES]


@pytest.fixture(scope='module')
def rules_text():
    return render_rules()


def test_ansible_renders_the_same_file(rules_text, tmp_path):
    """What the tests check is what the role installs: Ansible's template module renders
    the template with the role's defaults to exactly render_rules()' text."""
    dest = tmp_path / RULES_NAME
    playbook = tmp_path / 'render.yml'
    playbook.write_text(yaml.safe_dump([{
        'hosts': 'localhost', 'gather_facts': False, 'connection': 'local',
        'vars': {'ansible_python_interpreter': sys.executable}, 'vars_files': [DEFAULTS],
        'tasks': [{'ansible.builtin.template': {'src': RULES_TEMPLATE, 'dest': str(dest), 'mode': '0644'}}],
    }]))
    returncode, out, err = run_playbook(str(playbook), inventory='localhost,', json_output=False)
    assert returncode == 0, '%s\n%s' % (out, err)
    assert dest.read_text() == rules_text


def test_promtool_check_rules(rules_text, tmp_path):
    path = tmp_path / RULES_NAME
    path.write_text(rules_text)
    proc = promtool('check', 'rules', str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'SUCCESS' in proc.stdout


@pytest.mark.parametrize('test_file', [os.path.basename(p) for p in TEST_FILES])
def test_promtool_unit_tests(rules_text, tmp_path, test_file):
    write_suite(str(tmp_path), rules_text)
    proc = promtool('test', 'rules', test_file, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unit_tests_catch_a_wrong_threshold(tmp_path):
    """The suite can fail: with the archive age threshold raised past the test's data,
    the WALArchiveLag firing case does not fire and promtool says so."""
    text = render_rules({'monitoring_wal_archive_max_age': 100000})
    write_suite(str(tmp_path), text)
    proc = promtool('test', 'rules', 'wal.test.yml', cwd=str(tmp_path))
    assert proc.returncode != 0
    assert 'WALArchiveLag' in proc.stdout + proc.stderr


def test_overrides_change_for_and_thresholds():
    text = render_rules({'monitoring_alert_for_overrides': {'WALArchiveFailing': '15s'},
                         'monitoring_backup_max_age_overrides': {'pg_snapshot': 120}})
    rules = alerts(text)
    assert {r['for'] for r in rules if r['alert'] == 'WALArchiveFailing'} == {'15s'}
    snapshot = [r for r in rules if r['alert'] == 'BackupFailed' and r['labels'].get('kind') == 'pg_snapshot']
    assert len(snapshot) == 1 and '> 120' in snapshot[0]['expr']
    # The rest keep their defaults.
    assert {r['for'] for r in rules if r['alert'] == 'WALArchiveLag'} == {'5m'}


def test_every_alert_is_documented_and_labelled(rules_text):
    rules = alerts(rules_text)
    names = sorted({r['alert'] for r in rules})
    assert len(names) >= 20, names
    with open(RUNBOOK) as handle:
        sections = set(re.findall(r'^## (\S+)\s*$', handle.read(), re.M))
    problems = []
    for rule in rules:
        name = rule['alert']
        if rule.get('labels', {}).get('severity') not in ('critical', 'warning'):
            problems.append('%s: labels.severity must be critical or warning' % name)
        annotations = rule.get('annotations', {})
        for key in ('summary', 'description', 'runbook_url'):
            if not annotations.get(key):
                problems.append('%s: no annotations.%s' % (name, key))
        if not annotations.get('runbook_url', '').endswith('#' + name.lower()):
            problems.append('%s: runbook_url must end with #%s' % (name, name.lower()))
        if name not in sections:
            problems.append('%s: no "## %s" section in docs/runbook.md' % (name, name))
        # The Jinja render must leave Prometheus' own {{ $labels }} templating intact.
        if 'raw %}' in str(rule) or ('{{ $labels.' not in annotations.get('summary', '') + annotations.get('description', '')
                                     and not rule['expr'].startswith('absent(')):
            problems.append('%s: summary/description do not name the labels of what fired' % name)
    assert not problems, '\n'.join(problems)
    # And no runbook section for an alert that does not exist.
    assert not sections - set(names), sections - set(names)


def test_every_alert_has_a_firing_and_a_quiet_case(rules_text):
    firing, quiet = set(), set()
    for path in TEST_FILES:
        with open(path) as handle:
            suite = yaml.safe_load(handle)
        assert suite['rule_files'] == [RULES_NAME], path
        for group in suite['tests']:
            for case in group.get('alert_rule_test', []):
                (firing if case.get('exp_alerts') else quiet).add(case['alertname'])
    names = {r['alert'] for r in alerts(rules_text)}
    assert not names - firing, 'alerts without a firing case: %s' % sorted(names - firing)
    assert not names - quiet, 'alerts without a quiet case: %s' % sorted(names - quiet)
    assert not (firing | quiet) - names, 'cases for unknown alerts: %s' % sorted((firing | quiet) - names)
