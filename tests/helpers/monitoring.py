"""The monitoring role's alert rules rendered as the role renders them, for tests.

The template uses plain Jinja2 (no Ansible filters), so rendering it here with the role's
defaults gives the file the role installs; ``trim_blocks`` is what Ansible's template
module sets.
"""

from __future__ import annotations

import os

import jinja2
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROLE = os.path.join(ROOT, 'roles', 'monitoring')
RULES_TEMPLATE = os.path.join(ROLE, 'templates', 'codeb-backup.rules.yml.j2')
DEFAULTS = os.path.join(ROLE, 'defaults', 'main.yml')
DASHBOARD = os.path.join(ROLE, 'files', 'codeb-backup-dashboard.json')
RUNBOOK = os.path.join(ROOT, 'docs', 'runbook.md')


def role_defaults():
    with open(DEFAULTS) as handle:
        return yaml.safe_load(handle)


def render_rules(overrides=None):
    """The rules file text from the role's defaults, with ``overrides`` (variable name ->
    value) replacing whole variables as extra vars would."""
    variables = role_defaults()
    variables.update(overrides or {})
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True,
                             keep_trailing_newline=True)
    with open(RULES_TEMPLATE) as handle:
        template = env.from_string(handle.read())
    return template.render(**variables)


def alerts(rules_text):
    """Every alerting rule (dict) of a rendered rules file, in order."""
    groups = yaml.safe_load(rules_text)['groups']
    return [rule for group in groups for rule in group['rules'] if 'alert' in rule]
