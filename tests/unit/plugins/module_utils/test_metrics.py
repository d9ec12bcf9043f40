"""Job metrics for node_exporter's textfile collector."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ansible_collections.codeb.backup.plugins.module_utils import metrics

COLLECTIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', '..', '..', '.collections')


def test_metrics_failure_keeps_last_success(tmp_path):
    path = metrics.write_job_metrics('pg_snapshot', 'worb', True, 1.5, size=42,
                                     textfile_dir=str(tmp_path), now=1000)
    text = open(path).read()
    assert 'codeb_backup_last_success_timestamp_seconds{kind="pg_snapshot",target="worb"} 1000' in text
    assert 'codeb_backup_last_size_bytes{kind="pg_snapshot",target="worb"} 42' in text
    metrics.write_job_metrics('pg_snapshot', 'worb', False, 0.2, textfile_dir=str(tmp_path), now=2000)
    text = open(path).read()
    assert 'codeb_backup_last_success_timestamp_seconds{kind="pg_snapshot",target="worb"} 1000' in text
    assert 'codeb_backup_last_attempt_timestamp_seconds{kind="pg_snapshot",target="worb"} 2000' in text
    assert 'codeb_backup_last_status{kind="pg_snapshot",target="worb"} 0' in text
    assert [n for n in os.listdir(tmp_path) if n.startswith('.')] == []


def _samples(path):
    """``{name: (labels, value)}`` as Prometheus' own parser reads the file."""
    with open(path) as handle:
        return {sample.name: (sample.labels, sample.value)
                for family in text_string_to_metric_families(handle.read())
                for sample in family.samples}


def test_metrics_are_valid_exposition_text_with_escaped_labels(tmp_path):
    target = 'wo"r\\b\nx'
    path = metrics.write_job_metrics('env', target, True, 0.25, size=123456789,
                                     textfile_dir=str(tmp_path), now=1764628000.123)
    samples = _samples(path)
    labels = {'kind': 'env', 'target': target}
    assert samples == {
        'codeb_backup_last_attempt_timestamp_seconds': (labels, 1764628000.123),
        'codeb_backup_last_duration_seconds': (labels, 0.25),
        'codeb_backup_last_size_bytes': (labels, 123456789),
        'codeb_backup_last_status': (labels, 1),
        'codeb_backup_last_success_timestamp_seconds': (labels, 1764628000.123),
    }
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)


def test_success_time_written_by_an_older_release_is_kept(tmp_path):
    """Files written before prometheus_client formatted them (plain integers) are read
    back, so an upgrade does not lose the last success time."""
    path = metrics.metrics_path(str(tmp_path), 'pg_snapshot', 'worb')
    with open(path, 'w') as handle:
        handle.write('# HELP codeb_backup_last_success_timestamp_seconds Unix time of the last '
                     'successful run.\n'
                     '# TYPE codeb_backup_last_success_timestamp_seconds gauge\n'
                     'codeb_backup_last_success_timestamp_seconds{kind="pg_snapshot",'
                     'target="worb"} 1764628000\n')
    metrics.write_job_metrics('pg_snapshot', 'worb', False, 1, textfile_dir=str(tmp_path), now=1764629000)
    samples = _samples(path)
    assert samples['codeb_backup_last_success_timestamp_seconds'][1] == 1764628000
    assert samples['codeb_backup_last_status'][1] == 0


def test_without_prometheus_client_a_job_fails_and_names_the_package(tmp_path):
    """A host without the library: the job's artifact is kept, the run fails and says
    which package to install; metrics are never skipped silently."""
    program = (
        'import sys\n'
        'sys.modules["prometheus_client"] = None  # the import fails as on a bare host\n'
        'sys.path.insert(0, sys.argv[1])\n'
        'from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError\n'
        'from ansible_collections.codeb.backup.plugins.module_utils.job import Job\n'
        'try:\n'
        '    with Job("pg_snapshot", "worb", sys.argv[2]):\n'
        '        pass\n'
        'except BackupError as error:\n'
        '    print(error.param)\n'
        '    print(error.msg)\n')
    proc = subprocess.run([sys.executable, '-c', program, COLLECTIONS, str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    param, msg = proc.stdout.split('\n', 1)
    assert param == 'metrics_dir'
    assert 'python3-prometheus-client' in msg and 'artifact is kept' in msg
    assert os.listdir(tmp_path) == []


def test_job_metrics_files_pass_promtool(tmp_path):
    """node_exporter drops a whole textfile it cannot parse, so every file a job writes must
    pass promtool: a first success, a failure after it, and a failure with no success ever."""
    metrics.write_job_metrics('pg_snapshot', 'app', True, 1.5, size=123, textfile_dir=str(tmp_path))
    metrics.write_job_metrics('pg_snapshot', 'app', False, 2, textfile_dir=str(tmp_path))
    metrics.write_job_metrics('redis_rdb', 'a"b\\c', False, 0.1, textfile_dir=str(tmp_path))
    files = sorted(tmp_path.glob('*.prom'))
    assert len(files) == 2
    for path in files:
        proc = subprocess.run(['promtool', 'check', 'metrics'], stdin=path.open(),
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, '%s: %s%s' % (path.name, proc.stdout, proc.stderr)


def test_extra_gauges_are_written_and_unknown_ones_refused(tmp_path):
    path = metrics.write_job_metrics('drill_env', 'worb/production', True, 0.1,
                                     textfile_dir=str(tmp_path), now=1000,
                                     gauges=dict(drill_checks_failed=0,
                                                 drill_recovery_point_lag_seconds=None))
    samples = _samples(path)
    assert samples['codeb_backup_drill_checks_failed'] == (
        {'kind': 'drill_env', 'target': 'worb/production'}, 0.0)
    assert 'codeb_backup_drill_recovery_point_lag_seconds' not in samples  # None: not measured
    with pytest.raises(ValueError):
        metrics.write_job_metrics('drill_env', 'x', True, 0.1, textfile_dir=str(tmp_path),
                                  gauges=dict(made_up=1))
