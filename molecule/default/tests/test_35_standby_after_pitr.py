"""The standby after test_30's in-place PITR: the primary is on a new timeline branched in the
past, the standby replayed past the branch point and cannot follow. setup-backup.yml sees
that and re-seeds it with a delta restore from the repository; a second run leaves it alone."""

import time

from conftest import failure, run_playbook, sql, task_results
from test_15_standby import (assert_row_replicates, assert_streaming, primary_timeline,
                             receiver_status, standby_sql)


def changed_hosts(parsed):
    return {host: stats['changed'] for host, stats in parsed.get('stats', {}).items() if stats['changed']}


def test_standby_cannot_follow_the_new_timeline(storage, backup):
    """Precondition (fails if test_30 did not move the primary to a timeline the standby
    cannot follow): the standby is still on an older timeline of the primary's history and
    has replayed it past the point where the primary's current history left it, so it can
    never stream on the primary's timeline. Decided from the positions, not by watching."""
    tli = primary_timeline(storage)
    assert tli > 1, 'no in-place PITR happened before this test'
    history = sql(storage, "SELECT pg_read_file('pg_wal/%08X.history')" % tli)
    # each line: parent timeline, the LSN where the history left it, a reason
    forks = {int(f[0]): f[1] for f in (line.split() for line in history.splitlines())
             if len(f) >= 2 and f[0].isdigit()}
    standby_tli = int(standby_sql(backup, 'SELECT timeline_id FROM pg_control_checkpoint()'))
    assert standby_tli != tli and standby_tli in forks, (standby_tli, history)
    replayed_past = standby_sql(backup, "SELECT pg_last_wal_replay_lsn() > '%s'::pg_lsn" % forks[standby_tli])
    assert replayed_past == 't', 'the standby could still follow: %s' % history
    assert receiver_status(backup) != 'streaming:%d' % tli


def test_setup_backup_reseeds_the_standby_on_the_new_timeline(storage, backup):
    rc, out, err = run_playbook('setup-backup.yml', {})
    assert rc == 0, (failure(out), err)
    # role task names come as '<role> : <task>'
    seeded = [r for name, r in task_results(out, 'backup')
              if name.endswith('Restore the standby from the repository (delta)')]
    assert seeded and seeded[0]['changed'], ('the standby was not re-seeded',
                                             [name for name, _r in task_results(out, 'backup')][-20:])
    assert '--delta' in seeded[0]['cmd'] and '--type=standby' in seeded[0]['cmd']
    assert_streaming(storage, backup)
    # the standby now holds the primary's history, not the dead branch
    assert_row_replicates(storage, backup)
    count = sql(storage, 'SELECT count(*) || \'|\' || max(i) FROM pitr')
    deadline = time.monotonic() + 60
    while standby_sql(backup, 'SELECT count(*) || \'|\' || max(i) FROM pitr') != count:
        assert time.monotonic() < deadline, 'standby pitr table differs from the primary'
        time.sleep(0.5)


def test_second_run_leaves_the_streaming_standby_alone(storage, backup):
    pid = standby_sql(backup, 'SELECT pid FROM pg_stat_wal_receiver')
    rc, out, err = run_playbook('setup-backup.yml', {})
    assert rc == 0, (failure(out), err)
    assert changed_hosts(out) == {}, changed_hosts(out)
    assert standby_sql(backup, 'SELECT pid FROM pg_stat_wal_receiver') == pid
