"""Launching codeb.backup's AWX job templates (awx/controller.yml) the way AWX does: a
private data directory for ansible-runner with the survey's defaults and answers (and the
template's own extra vars) in env/extravars, the inventory in inventory/ and the project
checkout in project/."""

from __future__ import annotations

import os
import shutil
import tempfile

import yaml

from helpers.ansible_runner import BIN, ROOT

CONTROLLER = yaml.safe_load(open(os.path.join(ROOT, 'awx', 'controller.yml')))
TEMPLATES = {t['name']: t for t in CONTROLLER['codeb_awx_job_templates']}


def survey_refuses(question, answer):
    """What AWX refuses at launch, before a job runs: an answer outside the choices or
    the length limits of its question."""
    if question['type'] == 'multiplechoice':
        return answer not in question['choices']
    return not question.get('min', 0) <= len(answer) <= question.get('max', 1024)


def extra_vars(name, answers=None, through_survey=True):
    """The extra vars AWX gives a job of template ``name``: the template's own, then each
    survey question's answer or default. ``through_survey=False`` is for an answer the
    survey would refuse, as the command line's -e can give it."""
    template = TEMPLATES[name]
    extravars = dict(template.get('extra_vars') or {})
    answers = dict(answers or {})
    refused = []
    for question in template['survey']:
        if question['variable'] in answers:
            answer = answers.pop(question['variable'])
            if survey_refuses(question, answer):
                refused.append(question['variable'])
            extravars[question['variable']] = answer
        elif 'default' in question:
            extravars[question['variable']] = question['default']
        else:
            assert not question['required'], 'the survey requires an answer for %s' % question['variable']
    assert not answers, 'not survey questions of %s: %s' % (name, sorted(answers))
    assert bool(refused) != through_survey, ('answers the survey refuses', refused)
    return extravars


def job_dir(name, parent, answers=None, through_survey=True, inventory=None,
            inventory_dir=None, project=ROOT, path=None):
    """A private data directory under ``parent`` for a job of template ``name``; returns
    (directory, extravars). The inventory is ``inventory`` (a dict, written as
    inventory/hosts.yml) or a copy of the directory ``inventory_dir`` (as AWX syncs an
    inventory source from the project). ``project`` is what project/ links to; ``path``
    the PATH of the job's environment (default: the project's venv first); ``project=None``
    leaves project/ to the caller (a directory copied into a container links it there)."""
    extravars = extra_vars(name, answers, through_survey)
    data = tempfile.mkdtemp(prefix='awx-job-', dir=str(parent))
    os.makedirs(os.path.join(data, 'env'))
    with open(os.path.join(data, 'env', 'extravars'), 'w') as handle:
        yaml.safe_dump(extravars, handle)
    # what the controller puts in the job's environment; the project's ansible.cfg finds
    # the collection (AWX installs it from the project the same way)
    with open(os.path.join(data, 'env', 'envvars'), 'w') as handle:
        yaml.safe_dump({'PATH': path or BIN + os.pathsep + os.environ.get('PATH', '/usr/bin:/bin'),
                        'ANSIBLE_NOCOLOR': '1'}, handle)
    if inventory_dir:
        shutil.copytree(inventory_dir, os.path.join(data, 'inventory'), symlinks=True)
    else:
        os.makedirs(os.path.join(data, 'inventory'))
        with open(os.path.join(data, 'inventory', 'hosts.yml'), 'w') as handle:
            yaml.safe_dump(inventory, handle)
    if project:
        os.symlink(project, os.path.join(data, 'project'))
    return data, extravars


def runner_cmdline(name):
    """The ansible-playbook options AWX adds for template ``name``."""
    return '--become' if TEMPLATES[name]['become_enabled'] else None


def failures(events):
    return [e['event_data'] for e in events if e['event'] == 'runner_on_failed']


def ok_tasks(events):
    return [e['event_data']['task'] for e in events if e['event'] == 'runner_on_ok']
