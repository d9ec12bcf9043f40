"""The monitoring role's alert rules rendered as the role renders them, for tests.

The template uses plain Jinja2 (no Ansible filters), so rendering it here with the role's
defaults gives the file the role installs; ``trim_blocks`` is what Ansible's template
module sets.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import jinja2
import yaml

from helpers.servers import free_port, stop_process, wait_for

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


def dashboard():
    with open(DASHBOARD) as handle:
        return json.load(handle)


def dashboard_targets(board=None):
    """(panel title, target) for every query target of every panel, rows included."""
    board = board or dashboard()
    found = []

    def walk(panels):
        for panel in panels:
            for target in panel.get('targets', []):
                found.append((panel.get('title', ''), target))
            walk(panel.get('panels', []))
    walk(board['panels'])
    return found


# What Grafana puts in place of its variables, for running a panel query outside Grafana.
GRAFANA_VARIABLES = {
    '$__rate_interval': '5m', '$__interval': '1m', '$__range': '1h', '${__range}': '1h',
    '$__range_s': '3600', '$instance': '.*', '${instance}': '.*',
}


def substitute_grafana_variables(expr):
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    return expr


def openmetrics(series, start, end, step=60):
    """OpenMetrics text of ``series`` ((family, type, sample name, labels, value) with value
    a number or a function of the sample's Unix time) sampled every ``step`` s from
    ``start`` to ``end``: each family once, its samples in time order, then ``# EOF``."""
    families = {}
    for family, kind, name, labels, value in series:
        families.setdefault((family, kind), []).append((name, labels, value))
    lines = []
    for (family, kind), members in families.items():
        lines.append('# TYPE %s %s' % (family, kind))
        for name, labels, value in members:
            text = ','.join('%s="%s"' % item for item in sorted(labels.items()))
            for t in range(start, end + 1, step):
                lines.append('%s{%s} %s %d' % (name, text, repr(float(value(t) if callable(value) else value)), t))
    lines.append('# EOF')
    return '\n'.join(lines) + '\n'


def tsdb_blocks(base, text):
    """TSDB blocks in ``base``/data made from the OpenMetrics ``text`` by promtool; the path."""
    source = os.path.join(base, 'fixture.om.txt')
    with open(source, 'w') as handle:
        handle.write(text)
    data = os.path.join(base, 'data')
    proc = subprocess.run(['promtool', 'tsdb', 'create-blocks-from', 'openmetrics', source, data],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError('promtool tsdb create-blocks-from openmetrics failed: %s%s'
                           % (proc.stdout, proc.stderr))
    return data


class Prometheus(object):
    """A real ``prometheus`` on 127.0.0.1:<free port> over ``data_dir`` (e.g. blocks from
    ``promtool tsdb create-blocks-from openmetrics``), with ``rule_files`` and no scrape
    targets unless ``config`` says otherwise. Stopped by PID."""

    def __init__(self, base, data_dir, config=None):
        self.base = base
        self.data_dir = data_dir
        self.port = free_port()
        self.config_path = os.path.join(base, 'prometheus.yml')
        with open(self.config_path, 'w') as handle:
            yaml.safe_dump(config or {'global': {'evaluation_interval': '1m'}}, handle)
        self.proc = None

    @property
    def url(self):
        return 'http://127.0.0.1:%d' % self.port

    def start(self, timeout=60):
        log = open(os.path.join(self.base, 'prometheus.log'), 'ab')
        self.proc = subprocess.Popen(
            ['prometheus', '--config.file=' + self.config_path,
             '--storage.tsdb.path=' + self.data_dir, '--storage.tsdb.retention.time=30d',
             '--web.listen-address=127.0.0.1:%d' % self.port],
            stdout=log, stderr=log, cwd=self.base)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError('prometheus exited with %s; see %s/prometheus.log'
                                   % (self.proc.returncode, self.base))
            try:
                with urllib.request.urlopen(self.url + '/-/ready', timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False
        wait_for(ready, timeout, 'Prometheus /-/ready on port %d' % self.port)

    def api(self, path, **params):
        """GET /api/v1/<path>; the decoded JSON answer, also for HTTP 4xx (bad queries)."""
        url = '%s/api/v1/%s?%s' % (self.url, path, urllib.parse.urlencode(params))
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            return json.load(error)

    def stop(self):
        stop_process(self.proc)
        self.proc = None
