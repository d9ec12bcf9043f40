"""Job metrics for node_exporter's textfile collector."""

from __future__ import annotations

import os

from ansible_collections.codeb.backup.plugins.module_utils import metrics


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
