"""pgBackRest core against a real PostgreSQL 15 and a real local repository (no SSH):
backups with metrics, the recovery window, refusals, and an exact scratch PITR."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.postgres import pgbackrest as pb
from ansible_collections.codeb.backup.plugins.module_utils.postgres import pitr
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError, LockTimeout
from helpers.ansible_runner import ROOT, run_module
from helpers.pgbackrest import archiving_cluster as archiving_cluster_in
from helpers.servers import free_port

STANZA = 'itest'


@pytest.fixture(scope='module')
def archiving_cluster():
    base = tempfile.mkdtemp(prefix='codeb-test-pgbr-')
    cluster = archiving_cluster_in(base, STANZA)
    # the stanza is made the way the role makes it: pg_pitr state=stanza
    stanza_args = dict(state='stanza', stanza=STANZA, repo_user='postgres', config=cluster.config)
    cluster.stanza_runs = [run_module('codeb.backup.pg_pitr', stanza_args, check=True),
                           run_module('codeb.backup.pg_pitr', stanza_args),
                           run_module('codeb.backup.pg_pitr', stanza_args),
                           run_module('codeb.backup.pg_pitr', stanza_args, check=True)]
    yield cluster
    cluster.stop()
    scratch = os.path.join(base, 'scratch')
    if os.path.exists(os.path.join(scratch, 'postmaster.pid')):
        subprocess.run(['runuser', '-u', 'postgres', '--', os.path.join(pb.DEFAULT_PG_BIN_DIR, 'pg_ctl'),
                        '-D', scratch, '-m', 'immediate', '-w', 'stop'], check=False, capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


def _kw(cluster):
    return dict(repo_user='postgres', config=cluster.config, metrics_dir=cluster.metrics_dir,
                lock_dir=cluster.lock_dir)


def test_stanza_is_created_only_when_missing_and_checked(archiving_cluster):
    predicted, created, again, predicted_again = archiving_cluster.stanza_runs
    for result in archiving_cluster.stanza_runs:
        assert not result.get('failed'), result
    assert predicted['changed'] and predicted['created'] and not predicted['checked']
    assert predicted['msg'] == 'would create stanza %s and check it' % STANZA
    assert created['changed'] and created['created'] and created['checked'], created
    assert not again['changed'] and not again['created'] and again['checked'], again
    assert not predicted_again['changed'] and not predicted_again['checked']
    assert predicted_again['msg'] == 'stanza %s exists; would check it' % STANZA
    assert pb.stanza_info(STANZA, run_as='postgres', config=archiving_cluster.config)


def test_window_needs_a_backup_first(archiving_cluster):
    info = pb.stanza_info(STANZA, run_as='postgres', config=archiving_cluster.config)
    with pytest.raises(BackupError) as exc:
        pb.window_from_info(info)
    assert exc.value.param == 'stanza'


def test_full_backup_writes_metrics_and_if_none_is_idempotent(archiving_cluster):
    result = pb.backup(STANZA, 'full', **_kw(archiving_cluster))
    assert result['changed'] and result['type'] == 'full' and result['size_bytes'] > 0
    assert result['label'].endswith('F')
    prom = open(os.path.join(archiving_cluster.metrics_dir,
                             'codeb_backup_pgbackrest_full_%s.prom' % STANZA)).read()
    assert 'codeb_backup_last_status{kind="pgbackrest_full",target="%s"} 1' % STANZA in prom
    again = pb.backup(STANZA, 'full', if_none=True, **_kw(archiving_cluster))
    assert again['changed'] is False and again['label'] == result['label']


def test_info_module_lists_backups_and_chooses_the_seed(archiving_cluster):
    args = dict(stanza=STANZA, scratch_user='postgres',  # the documented alias
                config=archiving_cluster.config, timeline=1)
    result = run_module('codeb.backup.pg_pitr_info', args, check=True)
    assert not result.get('failed') and result['changed'] is False, result
    labels = [b['label'] for b in result['backups']]
    assert labels and result['seed_backup'] == labels[-1]
    assert result['earliest'].endswith('+00') and result['newest_backup_stop'].endswith('+00')
    # a primary on timeline 2 whose history never left timeline 1: no backup can seed it
    other = run_module('codeb.backup.pg_pitr_info', dict(args, timeline=2))
    assert other['seed_backup'] is None and other['changed'] is False, other


def test_backup_state_with_if_none_is_unchanged_when_a_backup_exists(archiving_cluster):
    args = dict(state='backup', stanza=STANZA, repo_user='postgres', backup_type='full',
                if_none=True, config=archiving_cluster.config,
                metrics_dir=archiving_cluster.metrics_dir)
    for check in (True, False):
        result = run_module('codeb.backup.pg_pitr', args, check=check)
        assert not result.get('failed') and result['changed'] is False, result
        assert result['msg'] == 'stanza already has a backup' and result['label'], result


def test_failed_backup_records_failure_but_keeps_last_success(archiving_cluster):
    path = os.path.join(archiving_cluster.metrics_dir, 'codeb_backup_pgbackrest_incr_%s.prom' % STANZA)
    pb.backup(STANZA, 'incr', **_kw(archiving_cluster))
    success_line = [line for line in open(path) if 'last_success' in line and not line.startswith('#')]
    # same repository, but PostgreSQL is "not there": the backup itself fails
    broken = archiving_cluster.config + '.broken'
    with open(archiving_cluster.config) as src, open(broken, 'w') as dst:
        dst.write(src.read().replace('pg1-port=%d' % archiving_cluster.port, 'pg1-port=%d' % free_port()))
    os.chmod(broken, 0o644)
    kw = _kw(archiving_cluster)
    kw['config'] = broken
    with pytest.raises(BackupError) as exc:
        pb.backup(STANZA, 'incr', **kw)
    assert 'pgbackrest backup' in exc.value.msg
    text = open(path).read()
    assert 'codeb_backup_last_status{kind="pgbackrest_incr",target="%s"} 0' % STANZA in text
    assert success_line[0] in text


def test_concurrent_backup_waits_then_fails_clearly(archiving_cluster):
    from ansible_collections.codeb.backup.plugins.module_utils import locking
    lock = pb.lock_path(archiving_cluster.lock_dir, STANZA)
    held = threading.Event()
    release = threading.Event()

    def holder():
        with locking.job_lock(lock, 'test holder'):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    try:
        with pytest.raises(LockTimeout) as exc:
            pb.backup(STANZA, 'incr', lock_timeout=0.5, **_kw(archiving_cluster))
        assert exc.value.param == 'lock_timeout'
    finally:
        release.set()
        thread.join()


def test_unknown_stanza_lists_the_known_ones(archiving_cluster):
    with pytest.raises(BackupError) as exc:
        pb.stanza_info('nosuch', run_as='postgres', config=archiving_cluster.config)
    assert exc.value.param == 'stanza' and STANZA in exc.value.msg


def test_exact_scratch_pitr_and_refusals(archiving_cluster):
    cluster = archiving_cluster
    cluster.psql('CREATE TABLE pitr(i int PRIMARY KEY, ts timestamptz DEFAULT clock_timestamp())')
    for i in range(1, 6):
        cluster.psql('INSERT INTO pitr(i) VALUES (%d)' % i)
    time.sleep(0.05)
    target = cluster.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
    time.sleep(0.05)
    for i in range(6, 11):
        cluster.psql('INSERT INTO pitr(i) VALUES (%d)' % i)
    flushed, _segment = pitr.flush_archive(port=cluster.port, socket=cluster.socket_dir, timeout=120)
    scratch = os.path.join(cluster.base, 'scratch')
    common = dict(restore_to='scratch', scratch_path=scratch, scratch_port=free_port(),
                  repo_user='postgres', config=cluster.config, archived_until=flushed,
                  metrics_dir=cluster.metrics_dir, lock_dir=cluster.lock_dir, timeout=120)
    # refusals change nothing: no scratch directory appears
    for bad, param in (({'target_time': '2026-02-30 10:00:00'}, 'target_time'),
                       ({'target_time': '2001-01-01 00:00:00'}, 'target_time'),
                       ({'target': 'sometime'}, 'target')):
        with pytest.raises(BackupError) as exc:
            pitr.restore(STANZA, **dict(common, **bad))
        assert exc.value.param == param
        assert not os.path.exists(scratch)
    later = (flushed + datetime.timedelta(minutes=5)).strftime('%Y-%m-%d %H:%M:%S')
    with pytest.raises(BackupError) as exc:
        pitr.restore(STANZA, target_time=later, **common)
    assert 'outside the recovery window' in exc.value.msg and exc.value.details['window']
    # check mode predicts and touches nothing
    plan = pitr.restore(STANZA, target_time=target, check_mode=True, **common)
    assert plan['changed'] and plan['target'] == 'time' and not os.path.exists(scratch)
    result = pitr.restore(STANZA, target_time=target, **common)
    assert result['timeline'] == 2 and result['recovery_stopped_at']
    rows = pitr.psql('SELECT i FROM pitr ORDER BY i', port=result['port'], socket=scratch)
    assert rows.split() == ['1', '2', '3', '4', '5']
    # production was not touched
    assert cluster.psql('SELECT count(*) FROM pitr') == '10'
    assert os.path.exists(os.path.join(scratch, pitr.SCRATCH_MARKER))


def _host_command(argv):
    """``codeb-backup ARGV`` as cron runs it: (exit code, stdout, stderr)."""
    code = ('import sys; sys.path.insert(0, %r)\n'
            'from ansible_collections.codeb.backup.plugins.module_utils.cli import main\n'
            'sys.exit(main(sys.argv[1:]))' % os.path.join(ROOT, '.collections'))
    proc = subprocess.run([sys.executable, '-c', code] + list(argv), capture_output=True,
                          text=True, timeout=120, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_window_command_prints_one_json_result(archiving_cluster):
    """``codeb-backup pgbackrest-window`` prints one JSON document on stdout; a failure
    only as the failed JSON and exit 1 (no stray error line)."""
    args = ['--run-as', 'postgres', '--config', archiving_cluster.config]
    pb.backup(STANZA, 'full', if_none=True, **_kw(archiving_cluster))
    rc, out, err = _host_command(['pgbackrest-window', '--stanza', STANZA] + args)
    assert rc == 0, (out, err)
    result = json.loads(out)
    assert result['stanza'] == STANZA and result['backups'] and result['earliest'], result
    assert err == ''
    rc, out, err = _host_command(['pgbackrest-window', '--stanza', 'nosuch'] + args)
    assert rc == 1, (out, err)
    result = json.loads(out)
    assert result['failed'] is True and result['param'] == 'stanza', result
    assert 'unknown stanza' in result['msg'] and STANZA in result['msg'], result
    assert err == '', err


def test_never_set_up_host_is_told_to_run_setup_backup_first(archiving_cluster):
    """restore.yml on a host never set up must say to run setup-backup.yml first, naming
    the parameter (not just "OS user 'pgbackrest' does not exist")."""
    missing = 'codeb-nosuch-user'
    never_made = os.path.join(tempfile.gettempdir(), 'codeb-never-made')
    with pytest.raises(BackupError) as exc:
        pitr.restore(STANZA, target='latest', restore_to='scratch', check_mode=True,
                     repo_user=missing, scratch_path=never_made, config=archiving_cluster.config)
    assert exc.value.param == 'repo_user', exc.value.as_result()
    assert 'setup-backup.yml' in exc.value.msg and missing in exc.value.msg
    with pytest.raises(BackupError) as exc:
        pitr.restore(STANZA, target='latest', restore_to='in_place', check_mode=True,
                     os_user=missing, config=archiving_cluster.config)
    assert exc.value.param == 'os_user' and 'setup-backup.yml' in exc.value.msg
    rc, out, _err = _host_command(['pgbackrest-window', '--stanza', STANZA, '--run-as', missing])
    result = json.loads(out)
    assert rc == 1 and result['param'] == 'repo_user' and 'setup-backup.yml' in result['msg'], result
