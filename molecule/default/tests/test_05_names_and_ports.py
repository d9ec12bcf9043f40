"""What the rest of the scenario stands on, checked first and cheaply:

* the containers resolve each other's names (fixed addresses in /etc/hosts, molecule.yml),
  which pgBackRest, the standby and Redis shipping need;
* every port the roles wrote into a configuration is the port the cluster really has, as
  pg_lsclusters reads it from the cluster's own configuration;
* the roles' port discovery reads a real cluster that is not on 5432 (the backup host's
  standby, 15/standby) and refuses a cluster that does not exist, naming it.
"""

import os
import re

from conftest import cluster_port, failure, run_playbook

PROBE = os.path.join(os.path.dirname(__file__), '..', 'port-probe.yml')


def own_address(host):
    out = host.check_output("ip -4 -o addr show scope global | awk '{print $4}'")
    return out.split('/')[0]


def test_hosts_resolve_each_other_by_name(storage, backup):
    for host, peer_name, peer in ((storage, 'backup', backup), (backup, 'storage', storage)):
        cmd = host.run('getent hosts %s' % peer_name)
        assert cmd.rc == 0, 'cannot resolve %s: %s' % (peer_name, cmd.stderr)
        assert cmd.stdout.split()[0] == own_address(peer), cmd.stdout


def test_roles_use_the_storage_clusters_real_port(storage, backup):
    port = cluster_port(storage)
    ready = storage.run('pg_isready -h /var/run/postgresql -p %d' % port)
    assert ready.rc == 0, ready.stdout + ready.stderr
    for host in (storage, backup):
        conf = host.file('/etc/pgbackrest.conf').content_string
        assert re.findall(r'(?m)^pg1-port=(\d+)$', conf) == [str(port)], conf
    cron = storage.file('/etc/cron.d/codeb-pg-snapshot').content_string
    used = set(re.findall(r'--login-port (\d+)', cron))
    assert used == {str(port)}, cron
    conninfo = backup.file('/etc/postgresql/15/standby/conf.d/60-codeb-standby.conf').content_string
    assert re.findall(r"primary_conninfo = 'host=storage port=(\d+) ", conninfo) == [str(port)], conninfo


def test_standby_config_uses_the_standby_clusters_real_port(backup):
    port = cluster_port(backup, 'standby')
    conf = backup.file('/etc/pgbackrest-standby.conf').content_string
    assert re.findall(r'(?m)^pg1-port=(\d+)$', conf) == [str(port)], conf


def _probe(host, cluster):
    rc, out, err = run_playbook(PROBE, {'codeb_probe_host': host, 'codeb_probe_cluster': cluster})
    assert rc == 0, (failure(out), err)
    report = [t['hosts'][host] for play in out['plays'] for t in play['tasks']
              if t['task']['name'] == 'Report' and host in t['hosts']]
    assert len(report) == 1, out
    return report[0]['msg']


def test_discovery_finds_a_cluster_that_is_not_on_5432(backup):
    port = cluster_port(backup, 'standby')
    assert port != 5432  # a real cluster on another port, which nothing may assume away
    found = _probe('backup', 'standby')
    assert found == {'postgresql_backup': port, 'pg_snapshot': port}


def test_discovery_refuses_a_cluster_that_does_not_exist(storage):
    found = _probe('storage', 'nosuch')
    for role in ('postgresql_backup', 'pg_snapshot'):
        message = str(found[role])
        assert '15/nosuch' in message and 'pg_lsclusters' in message, found
