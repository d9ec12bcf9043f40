"""What setup-backup.yml leaves on the hosts (testinfra over podman exec)."""

from conftest import sql


def test_postgresql_archives_with_pgbackrest(storage):
    assert storage.service('postgresql@15-main').is_running
    assert sql(storage, 'SHOW archive_mode') == 'on'
    assert sql(storage, 'SHOW wal_level') == 'replica'
    assert sql(storage, 'SHOW archive_timeout') == '1min'
    assert sql(storage, 'SHOW archive_command') == 'pgbackrest --stanza=codeb archive-push %p'
    conf = storage.file('/etc/pgbackrest.conf')
    assert conf.mode == 0o640 and conf.group == 'postgres'
    assert 'archive-async=y' in conf.content_string
    assert 'compress-type=zst' in conf.content_string
    assert 'repo1-host=backup' in conf.content_string


def test_repository_host(backup):
    conf = backup.file('/etc/pgbackrest.conf').content_string
    assert 'repo1-path=/opt/codeb/pgbackrest' in conf
    assert 'repo1-retention-full-type=time' in conf
    assert 'repo1-retention-full=7' in conf
    repo = backup.file('/opt/codeb/pgbackrest')
    assert repo.is_directory and repo.user == 'pgbackrest' and repo.mode == 0o750
    cron = backup.file('/etc/cron.d/codeb-backup-pgbackrest').content_string
    for kind in ('full', 'diff', 'incr'):
        assert '/usr/local/bin/codeb-backup pgbackrest-backup --stanza codeb --type %s' % kind in cron


def test_keys_are_private(storage, backup):
    assert storage.file('/var/lib/postgresql/.ssh/id_ed25519').mode == 0o600
    assert backup.file('/var/lib/codeb-pgbackrest/.ssh/id_ed25519').mode == 0o600
    assert 'no-port-forwarding' in storage.file('/var/lib/postgresql/.ssh/authorized_keys').content_string


def test_first_full_backup_and_its_metrics(backup):
    info = backup.check_output('runuser -u pgbackrest -- pgbackrest --stanza=codeb info --output=json')
    import json
    stanza = json.loads(info)[0]
    assert stanza['status']['code'] == 0
    assert any(b['type'] == 'full' for b in stanza['backup'])
    prom = backup.file('/var/lib/prometheus/node-exporter/codeb_backup_pgbackrest_full_codeb.prom')
    assert 'codeb_backup_last_status{kind="pgbackrest_full",target="codeb"} 1' in prom.content_string


def test_host_cli_incremental_backup_writes_metrics(backup):
    import json
    out = json.loads(backup.check_output(
        '/usr/local/bin/codeb-backup pgbackrest-backup --stanza codeb --type incr --run-as pgbackrest'))
    assert out['changed'] is True and out['type'] == 'incr' and out['label'].endswith('I')
    prom = backup.file('/var/lib/prometheus/node-exporter/codeb_backup_pgbackrest_incr_codeb.prom')
    assert 'codeb_backup_last_status{kind="pgbackrest_incr",target="codeb"} 1' in prom.content_string


def test_host_cli_unknown_stanza_is_refused(backup):
    cmd = backup.run('/usr/local/bin/codeb-backup pgbackrest-backup --stanza nosuch --type incr')
    assert cmd.rc == 1
    assert "unknown stanza 'nosuch'" in cmd.stdout and 'codeb' in cmd.stdout


def test_host_cli_shows_the_recovery_window(backup):
    import json
    out = json.loads(backup.check_output('/usr/local/bin/codeb-backup pgbackrest-window --stanza codeb'))
    assert out['stanza'] == 'codeb' and out['earliest'].endswith('+00')
    assert [b['type'] for b in out['backups']][0] == 'full'
