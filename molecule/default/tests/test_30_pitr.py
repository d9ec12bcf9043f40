"""playbooks/restore.yml: exact point-in-time recovery, refusals, archiving afterwards."""

import datetime
import time

from conftest import failure, run_playbook, scratch_sql, sql, task_results

PIDFILE = '/tmp/codeb-pitr-inserter.pid'
INSERTER = ("nohup runuser -u postgres -- bash -c 'for i in $(seq 1 %d); do "
            "echo \"INSERT INTO pitr(i) VALUES ($i); SELECT pg_sleep(0.05);\"; done | "
            "psql -X -q -d postgres >/dev/null' >/dev/null 2>&1 & echo $! > " + PIDFILE)


def wait_inserter_done(storage):
    """A previous test's inserter must be finished before its table is replaced."""
    deadline = time.monotonic() + 120
    while storage.run('test -f %s && kill -0 "$(cat %s)"' % (PIDFILE, PIDFILE)).rc == 0:
        assert time.monotonic() < deadline, 'previous inserter still running'
        time.sleep(0.5)


def start_inserter(storage, rows):
    """Rows committed continuously (own transaction each, ~20/s) with their times."""
    wait_inserter_done(storage)
    sql(storage, 'DROP TABLE IF EXISTS pitr')
    sql(storage, 'CREATE TABLE pitr(i int PRIMARY KEY, ts timestamptz NOT NULL DEFAULT clock_timestamp())')
    storage.run(INSERTER % rows)


def wait_rows(storage, count):
    deadline = time.monotonic() + 120
    while int(sql(storage, 'SELECT count(*) FROM pitr')) < count:
        assert time.monotonic() < deadline, 'inserter stalled'
        time.sleep(0.2)


def pick_target(storage):
    """T = the server's clock, between commits, while rows keep coming."""
    wait_rows(storage, 40)
    target = sql(storage, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
    count_at_t = int(sql(storage, 'SELECT count(*) FROM pitr'))
    wait_rows(storage, count_at_t + 40)
    return target


def check_exact(rows, target):
    """Every row committed <= T present, none after: the rows kept are a prefix 1..k, every
    row stamped more than 5 ms before T is kept (its commit follows its stamp within
    microseconds), and no row stamped after T is kept."""
    t = datetime.datetime.strptime(target, '%Y-%m-%d %H:%M:%S.%f').replace(tzinfo=datetime.timezone.utc)
    kept = [int(r.split('|')[0]) for r in rows]
    assert kept == list(range(1, len(kept) + 1)), 'rows kept are not a prefix'
    return t, kept


def stamps(host, query_fn, table='pitr'):
    out = query_fn(host, "SELECT i, to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM %s ORDER BY i" % table)
    return [line for line in out.splitlines() if line]


def as_time(text):
    return datetime.datetime.strptime(text, '%Y-%m-%d %H:%M:%S.%f').replace(tzinfo=datetime.timezone.utc)


def production_state(storage):
    return (sql(storage, 'SELECT pg_postmaster_start_time()'),
            sql(storage, 'SELECT timeline_id FROM pg_control_checkpoint()'))


def assert_refused(storage, extra_vars, *needles):
    before = production_state(storage)
    rc, out, err = run_playbook('restore.yml', extra_vars)
    assert rc != 0
    host, task, res = failure(out)
    for needle in needles:
        assert needle in res['msg'], res['msg']
    assert production_state(storage) == before  # not restarted, same timeline
    return res


def test_malformed_target_time_is_refused(storage):
    res = assert_refused(storage, {'target_time': '2026-13-45 25:61:00', 'restore_to': 'in_place'},
                         'target_time')
    assert res.get('param') == 'target_time'
    res = assert_refused(storage, {'target_time': 'yesterday', 'restore_to': 'in_place'}, 'YYYY-MM-DD HH:MM:SS')
    assert res.get('param') == 'target_time'


def test_time_outside_window_is_refused_with_the_window(storage):
    res = assert_refused(storage, {'target_time': '2000-01-01 00:00:00', 'restore_to': 'in_place'},
                         'outside the recovery window', 'earliest point is')
    assert set(res['window']) == {'earliest', 'latest'}
    future = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)).strftime('%Y-%m-%d %H:%M:%S')
    assert_refused(storage, {'target_time': future, 'restore_to': 'scratch'}, 'outside the recovery window')


def test_unknown_stanza_is_refused(storage):
    res = assert_refused(storage, {'target_time': '2026-01-01 00:00:00', 'stanza': 'nosuch'},
                         "unknown stanza 'nosuch'", 'codeb')
    assert res.get('param') == 'stanza'
    assert_refused(storage, {'target_time': '2026-01-01 00:00:00', 'stanza': '../etc'}, 'stanza')


def test_scratch_restore_is_exact_and_leaves_production_alone(storage, backup):
    start_inserter(storage, 400)
    target = pick_target(storage)
    before = production_state(storage)
    rc, out, err = run_playbook('restore.yml', {'target_time': target, 'restore_to': 'scratch'})
    assert rc == 0, (failure(out), err)
    result = [r for name, r in task_results(out, 'backup') if name.startswith('Restore into')][0]
    assert result['changed'] and result['restore_to'] == 'scratch'
    t, kept = check_exact(stamps(backup, scratch_sql), target)
    prod = {int(r.split('|')[0]): as_time(r.split('|')[1]) for r in stamps(storage, sql)}
    assert len(prod) > len(kept)  # production went on
    for i, ts in prod.items():
        if ts <= t - datetime.timedelta(milliseconds=5):
            assert i in kept, 'row %d committed before T is missing' % i
        if ts > t:
            assert i not in kept, 'row %d committed after T is present' % i
    assert production_state(storage) == before


def test_in_place_restore_is_exact_and_archiving_continues(storage, backup):
    start_inserter(storage, 400)
    target = pick_target(storage)
    wait_rows(storage, 400)  # inserter done: nothing writes during the restore
    all_rows = {int(r.split('|')[0]): as_time(r.split('|')[1]) for r in stamps(storage, sql)}
    timeline_before = int(production_state(storage)[1])
    rc, out, err = run_playbook('restore.yml', {'target_time': target, 'restore_to': 'in_place'})
    assert rc == 0, (failure(out), err)
    result = [r for name, r in task_results(out, 'storage') if name.startswith('Stop, restore')][0]
    assert result['timeline'] == timeline_before + 1
    assert result['recovery_stopped_at']
    t, kept = check_exact(stamps(storage, sql), target)
    for i, ts in all_rows.items():
        if ts <= t - datetime.timedelta(milliseconds=5):
            assert i in kept, 'row %d committed before T is missing' % i
        if ts > t:
            assert i not in kept, 'row %d committed after T is present' % i
    # archiving continues on the new timeline; the old one is still in the repository
    sql(storage, 'INSERT INTO pitr(i) VALUES (100000)')
    segment = sql(storage, 'SELECT pg_walfile_name(pg_switch_wal())')
    assert int(segment[:8], 16) == timeline_before + 1
    deadline = time.monotonic() + 120
    while sql(storage, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < segment:
        assert time.monotonic() < deadline, 'new timeline not archived'
        time.sleep(0.5)
    check = backup.run('runuser -u pgbackrest -- pgbackrest --stanza=codeb check')
    assert check.rc == 0, check.stderr
    history = backup.run('runuser -u pgbackrest -- pgbackrest --stanza=codeb repo-ls archive/codeb/15-1')
    assert '%08X.history' % (timeline_before + 1) in history.stdout
    assert '%08X' % timeline_before + '00000000' in history.stdout or timeline_before > 1
