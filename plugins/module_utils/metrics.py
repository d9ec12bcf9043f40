# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Job outcome metrics for node_exporter's textfile collector.

One ``*.prom`` file per (kind, target), written atomically. A failed run updates the
attempt time and status but keeps the previous success timestamp, so
``BackupFailed`` fires on the age of the last *success*.

The text is written and read back with ``prometheus_client`` (Debian package
``python3-prometheus-client`` on the hosts), so its escaping and number format are the
exposition format's own. Without that library every job that writes metrics fails and
names the package: a backup whose outcome monitoring cannot see looks like a stopped one.
"""

from __future__ import annotations

import os
import re
import sys
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.spec import Option

try:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as import_error:
    PROMETHEUS_CLIENT_IMPORT_ERROR = import_error
else:
    PROMETHEUS_CLIENT_IMPORT_ERROR = None

DEFAULT_TEXTFILE_DIR = '/var/lib/prometheus/node-exporter'
PREFIX = 'codeb_backup_'
LABELS = ('kind', 'target')
SUCCESS = 'last_success_timestamp_seconds'

HELP = {
    'last_success_timestamp_seconds': 'Unix time of the last successful run.',
    'last_attempt_timestamp_seconds': 'Unix time of the last run, successful or not.',
    'last_status': '1 if the last run succeeded, 0 if it failed.',
    'last_duration_seconds': 'Duration of the last run in seconds.',
    'last_size_bytes': 'Size in bytes of the artifact the last successful run wrote.',
    # restore drills (drill/): what the drill's checks found, written by every drill run
    'drill_checks_failed': 'Number of checks the last restore drill found failing.',
    'drill_recovery_point_lag_seconds': 'Age in seconds of the newest point the last restore '
                                        'drill recovered (its recovery point objective).',
}
# Gauges a job may add to its outcome (Job.gauges): written on success and on failure,
# because they describe what the run found.
EXTRA_GAUGES = ('drill_checks_failed', 'drill_recovery_point_lag_seconds')

# The option of every job that writes metrics, in every subsystem.
METRICS_DIR_OPTION = Option('metrics_dir', type='path', default=DEFAULT_TEXTFILE_DIR,
                            help='node_exporter textfile directory ("" disables metrics)')


def metrics_path(textfile_dir, kind, target):
    safe = re.sub(r'[^A-Za-z0-9_.-]', '_', '%s_%s' % (kind, target))
    return os.path.join(textfile_dir, '%s%s.prom' % (PREFIX, safe))


def remove_job_metrics(textfile_dir, kind, target):
    """Remove the metrics of a job that no longer runs here (so an alert on its old
    failure stops); return True if a file was removed."""
    if not textfile_dir:
        return False
    try:
        os.unlink(metrics_path(textfile_dir, kind, target))
    except FileNotFoundError:
        return False
    durable.fsync_dir(textfile_dir)
    return True


def require_prometheus_client():
    if PROMETHEUS_CLIENT_IMPORT_ERROR is not None:
        raise BackupError(
            'writing job metrics needs the Python library prometheus_client, which %s cannot '
            'import (%s): install the Debian package python3-prometheus-client (the role '
            'codeb.backup.host_cli installs it unless host_cli_install_packages is false), or '
            'set metrics_dir to an empty string to write no metrics'
            % (sys.executable, PROMETHEUS_CLIENT_IMPORT_ERROR), param='metrics_dir')


class _Outcome(object):
    """A collector for one job's gauges. Not prometheus_client's ``Gauge``: its values
    live in process-wide state (in files, where PROMETHEUS_MULTIPROC_DIR is set), while
    each write here describes one file and nothing else."""

    def __init__(self, kind, target, values):
        self.labels = [str(kind), str(target)]
        self.values = values

    def collect(self):
        for name in sorted(self.values):
            family = GaugeMetricFamily(PREFIX + name, HELP[name], labels=LABELS)
            family.add_metric(self.labels, self.values[name])
            yield family


def read_success_time(path):
    """The last success time recorded in ``path``, or None (no file, none recorded, or a
    file the parser rejects: then the next success writes a good one)."""
    require_prometheus_client()
    try:
        with open(path) as handle:
            text = handle.read()
        for family in text_string_to_metric_families(text):
            if family.name == PREFIX + SUCCESS:
                for sample in family.samples:
                    return float(sample.value)
    except (OSError, ValueError):
        return None
    return None


def write_job_metrics(kind, target, ok, duration, size=None, textfile_dir=DEFAULT_TEXTFILE_DIR,
                      now=None, gauges=None):
    """Write the outcome of one job run; return the file written (None if disabled).
    ``gauges``: extra values by name (``EXTRA_GAUGES``) the job measured."""
    if not textfile_dir:
        return None
    require_prometheus_client()
    now = time.time() if now is None else now
    durable.ensure_dir(textfile_dir, mode=0o755)
    path = metrics_path(textfile_dir, kind, target)
    previous_success = read_success_time(path)
    values = {
        'last_attempt_timestamp_seconds': now,
        'last_status': 1 if ok else 0,
        'last_duration_seconds': round(float(duration), 3),
    }
    if ok:
        values[SUCCESS] = now
        if size is not None:
            values['last_size_bytes'] = int(size)
    elif previous_success is not None:
        values[SUCCESS] = previous_success
    for name, value in (gauges or {}).items():
        if name not in EXTRA_GAUGES:
            raise ValueError('unknown job gauge %r' % name)
        if value is not None:
            values[name] = float(value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Outcome(kind, target, values))
    # prometheus_client.write_to_textfile renames a temporary file into place but never
    # fsyncs it, so after a power loss the file can be empty while its name is new; the
    # durable write fsyncs the file and its directory before and after the rename.
    durable.atomic_write_bytes(path, generate_latest(registry), mode=0o644)
    return path
