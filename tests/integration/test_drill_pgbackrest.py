"""The pgBackRest + PITR restore drill against a real PostgreSQL 15 archiving to a real
local pgBackRest repository (tests/helpers/pgbackrest.py): marker rows on the primary, the
latest backup restored into scratch with a recovery target between them, pg_amcheck and
pgbackrest verify, and the damage of a WAL segment the recovery needs."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from faults.harness import run_cli
from helpers.pgbackrest import archiving_cluster as archiving_cluster_in
from helpers.servers import wait_for
from integration.test_drill import _scratch_left, _scratch_processes, _status

from ansible_collections.codeb.backup.plugins.module_utils.drill import pgbackrest as drill_pgbackrest
from ansible_collections.codeb.backup.plugins.module_utils.drill.run import run_drills
from ansible_collections.codeb.backup.plugins.module_utils.postgres import pgbackrest as pb
from ansible_collections.codeb.backup.plugins.module_utils.postgres import pitr

STANZA = 'drill'


@pytest.fixture(scope='module')
def primary():
    base = tempfile.mkdtemp(prefix='codeb-test-drill-pgbr-')
    cluster = archiving_cluster_in(base, STANZA)
    pb.ensure_stanza(STANZA, repo_user='postgres', config=cluster.config)
    cluster.psql('CREATE TABLE app (id int PRIMARY KEY, v text);'
                 'INSERT INTO app SELECT g, md5(g::text) FROM generate_series(1, 1000) g')
    cluster.backup = pb.backup(STANZA, 'full', repo_user='postgres', config=cluster.config,
                               metrics_dir='', lock_dir=cluster.lock_dir)
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def drill_dirs():
    parent = tempfile.mkdtemp(prefix='codeb-test-drill-')
    os.chmod(parent, 0o755)
    yield dict(scratch=os.path.join(parent, 'scratch'), metrics=os.path.join(parent, 'metrics'))
    shutil.rmtree(parent, ignore_errors=True)


def _params(primary, dirs):
    return dict(kinds=['pgbackrest'], scratch_path=dirs['scratch'], metrics_dir=dirs['metrics'],
                pgbackrest_stanza=STANZA, pgbackrest_repo_user='postgres',
                pgbackrest_config=primary.config,
                pgbackrest_primary_unix_socket=primary.socket_dir,
                pgbackrest_primary_port=primary.port, timeout=120.0)


def test_pgbackrest_drill_recovers_to_the_marker_and_passes(primary, drill_dirs):
    before = primary.psql('SELECT count(*) FROM app')
    result = run_drills(_params(primary, drill_dirs))
    assert result['failed'] is False, result['msg']
    target = result['kinds']['pgbackrest']['targets'][0]
    assert target['ok'] and target['backup'] == primary.backup['label'], target
    assert target['recovery_stopped_at'], target
    # both marker rows were committed on the primary; only the first was recovered
    rows = primary.psql('SELECT id FROM codeb_drill.marker WHERE id IN (%d, %d)'
                        % (target['marker_id'], target['after_id'])).split()
    assert rows == [str(target['marker_id']), str(target['after_id'])]
    values = _status(drill_dirs)[('drill_pgbackrest', STANZA)]
    assert values['codeb_backup_last_status'] == 1
    assert values['codeb_backup_drill_checks_failed'] == 0
    assert 0 <= values['codeb_backup_drill_recovery_point_lag_seconds'] < 600
    assert _scratch_left(drill_dirs['scratch']) == []
    assert _scratch_processes(drill_dirs['scratch']) == []
    assert primary.psql('SELECT count(*) FROM app') == before
    assert primary.psql("SELECT setting FROM pg_settings WHERE name = 'archive_mode'") == 'on'


def test_killed_pgbackrest_drill_leaves_a_cluster_the_next_run_stops(primary, drill_dirs):
    """pg_ctl detaches the restored cluster from the drill, so a killed drill leaves it
    running: the next run finds it by the postmaster.pid in its recorded directory."""
    params = _params(primary, drill_dirs)
    argv = ['drill'] + [arg for key, value in sorted(params.items()) for arg in
                        ('--' + key.replace('_', '-'), value[0] if isinstance(value, list)
                         else str(value))]
    run = run_cli(argv, at='spawn=pg_amcheck:1')
    assert run.killed and 'KILL-POINT' in run.err, run
    left = _scratch_processes(drill_dirs['scratch'])
    assert left, 'the restored cluster should outlive the killed drill'
    result = run_drills(params)
    assert result['failed'] is False, result['msg']
    cleaned = result['kinds']['pgbackrest']['leftovers_cleaned']
    assert set(left) & set(cleaned['stopped']) and cleaned['removed'], cleaned
    wait_for(lambda: _scratch_processes(drill_dirs['scratch']) == [], 30,
             'the leftover scratch cluster to exit')
    assert _scratch_left(drill_dirs['scratch']) == []


def test_marker_login_that_is_not_a_superuser_still_drills(primary, drill_dirs):
    """The login writing the markers on the primary needs no superuser (the role creates
    it with CREATE on the marker database and EXECUTE on pg_switch_wal); the restored
    cluster is checked as its superuser, not as that login (pg_amcheck installs amcheck)."""
    primary.psql(drill_pgbackrest._MARKER_SQL)  # pylint: disable=protected-access
    primary.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'drill_login') THEN "
                 "CREATE ROLE drill_login LOGIN PASSWORD 'drill-login-secret'; END IF; END $$;"
                 'GRANT CREATE ON DATABASE postgres TO drill_login;'
                 'GRANT EXECUTE ON FUNCTION pg_catalog.pg_switch_wal() TO drill_login;'
                 'GRANT USAGE, CREATE ON SCHEMA codeb_drill TO drill_login;'
                 'GRANT SELECT, INSERT ON codeb_drill.marker TO drill_login;'
                 'GRANT USAGE ON SEQUENCE codeb_drill.marker_id_seq TO drill_login')
    password = os.path.join(drill_dirs['scratch'] + '-pw')
    with open(password, 'w') as handle:
        handle.write('drill-login-secret\n')
    os.chmod(password, 0o600)
    params = dict(_params(primary, drill_dirs), pgbackrest_primary_host='127.0.0.1',
                  pgbackrest_primary_user='drill_login', pgbackrest_primary_password_file=password)
    params.pop('pgbackrest_primary_unix_socket')
    result = run_drills(params)
    assert result['failed'] is False, result['msg']
    target = result['kinds']['pgbackrest']['targets'][0]
    assert target['ok'] and target['recovery_stopped_at'], target
    assert _scratch_left(drill_dirs['scratch']) == []


def test_a_missing_wal_segment_fails_the_drill_naming_it(primary, drill_dirs):
    """Last in this module: the repository stays damaged."""
    # WAL written after the backup: the recovery to a later marker needs this segment
    primary.psql('INSERT INTO app SELECT g, md5(g::text) FROM generate_series(1001, 2000) g')
    _flushed, segment = pitr.flush_archive(port=primary.port, socket=primary.socket_dir,
                                           timeout=120)
    archive = os.path.join(primary.repo, 'archive', STANZA)
    removed = []
    for base, _dirs, files in os.walk(archive):
        for name in files:
            if name.startswith(segment):
                os.unlink(os.path.join(base, name))
                removed.append(name)
    assert removed, (segment, archive)
    result = run_drills(_params(primary, drill_dirs))
    assert result['failed'] is True
    target = result['kinds']['pgbackrest']['targets'][0]
    assert target['ok'] is False, target
    assert segment in target['error'], target['error']
    values = _status(drill_dirs)[('drill_pgbackrest', STANZA)]
    assert values['codeb_backup_last_status'] == 0
    assert values['codeb_backup_drill_checks_failed'] >= 1
    assert _scratch_left(drill_dirs['scratch']) == []
    assert _scratch_processes(drill_dirs['scratch']) == []
