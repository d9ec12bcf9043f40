"""The optional streaming standby on the backup host (codeb_pg_standby: true in molecule.yml):
seeded from the pgBackRest repository, streaming from the storage host, read-only, and
back to streaming after a restart."""

import time
import uuid

from conftest import cluster_port, sql

STANDBY_PORT = 5433
SERVICE = 'postgresql@15-standby'


def standby_sql(backup, query):
    return sql(backup, query, port=STANDBY_PORT)


def poll(what, fn, timeout=120, interval=0.5):
    """Call fn until it returns a true value; fail with ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, 'timed out waiting for: %s' % what
        time.sleep(interval)


def primary_timeline(storage):
    return int(sql(storage, 'SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)'), 16)


def replication_row(storage):
    return sql(storage, "SELECT state || '|' || sync_state FROM pg_stat_replication "
                        "WHERE application_name = 'codeb_standby'")


def receiver_status(backup):
    return standby_sql(backup, "SELECT status || ':' || receive_start_tli FROM pg_stat_wal_receiver")


def assert_streaming(storage, backup, timeout=120):
    poll('pg_stat_replication on storage shows codeb_standby streaming',
         lambda: replication_row(storage) == 'streaming|async', timeout)
    tli = primary_timeline(storage)
    poll('standby wal receiver streaming on timeline %d' % tli,
         lambda: receiver_status(backup) == 'streaming:%d' % tli, timeout)


def assert_row_replicates(storage, backup, timeout=120):
    sql(storage, 'CREATE TABLE IF NOT EXISTS standby_probe(token text PRIMARY KEY, '
                 'ts timestamptz NOT NULL DEFAULT clock_timestamp())')
    token = uuid.uuid4().hex
    sql(storage, "INSERT INTO standby_probe(token) VALUES ('%s')" % token)

    def visible():
        if standby_sql(backup, "SELECT to_regclass('standby_probe') IS NULL") == 't':
            return False  # the table itself has not been replayed yet
        return standby_sql(backup, "SELECT count(*) FROM standby_probe WHERE token = '%s'" % token) == '1'

    poll('row %s visible on the standby' % token, visible, timeout)


def test_standby_is_a_hot_standby_of_the_primary(storage, backup):
    assert backup.service(SERVICE).is_running
    assert backup.service(SERVICE).is_enabled
    assert standby_sql(backup, 'SELECT pg_is_in_recovery()') == 't'
    assert standby_sql(backup, 'SHOW hot_standby') == 'on'
    same = (sql(storage, 'SELECT system_identifier FROM pg_control_system()')
            == standby_sql(backup, 'SELECT system_identifier FROM pg_control_system()'))
    assert same, 'the standby is not a copy of this primary'
    # seeded by pgbackrest restore --type=standby: it fetches missed WAL from the repository
    assert 'archive-get' in standby_sql(backup, 'SHOW restore_command')
    assert '--config=/etc/pgbackrest-standby.conf' in standby_sql(backup, 'SHOW restore_command')


def test_password_is_only_in_the_passfile(storage, backup):
    conninfo = standby_sql(backup, 'SHOW primary_conninfo')
    assert 'passfile=/var/lib/postgresql/.codeb-standby.pgpass' in conninfo
    assert 'password' not in conninfo.replace('passfile', '')
    assert 'molecule-only-replication-secret' not in backup.file(
        '/etc/postgresql/15/standby/conf.d/60-codeb-standby.conf').content_string
    passfile = backup.file('/var/lib/postgresql/.codeb-standby.pgpass')
    assert passfile.mode == 0o600 and passfile.user == 'postgres'
    prefix = 'storage:%d:replication:codeb_replication:' % cluster_port(storage)
    assert passfile.content_string.startswith(prefix)
    # no replication slot: a dead standby must never make the primary keep WAL
    assert sql(storage, 'SELECT count(*) FROM pg_replication_slots') == '0'


def test_standby_streams_from_the_primary(storage, backup):
    assert_streaming(storage, backup)


def test_committed_row_becomes_visible_on_the_standby(storage, backup):
    assert_row_replicates(storage, backup)


def test_standby_refuses_writes(storage, backup):
    cmd = backup.run("runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -h /var/run/postgresql -p %d "
                     "-d postgres -c 'CREATE TABLE standby_write(i int)'" % STANDBY_PORT)
    assert cmd.rc != 0
    assert 'read-only transaction' in cmd.stderr, cmd.stderr
    assert sql(storage, "SELECT to_regclass('standby_write') IS NULL") == 't'


def test_standby_survives_a_restart_and_reconnects(storage, backup):
    pid_before = standby_sql(backup, "SELECT pid FROM pg_stat_wal_receiver")
    cmd = backup.run('systemctl restart %s' % SERVICE)
    assert cmd.rc == 0, cmd.stderr
    assert backup.service(SERVICE).is_running
    assert_streaming(storage, backup)
    assert standby_sql(backup, "SELECT pid FROM pg_stat_wal_receiver") != pid_before
    assert_row_replicates(storage, backup)
