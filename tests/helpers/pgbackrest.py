"""A real PostgreSQL 15 archiving to a real local pgBackRest repository (no SSH)."""

from __future__ import annotations

import os
import pwd

from helpers.servers import PostgresCluster


def archiving_cluster(base, stanza, extra_conf=None):
    """A started cluster in ``base`` whose archive_command pushes to a pgBackRest repository
    in ``base``/repo for ``stanza`` (the stanza is not created). The cluster carries
    ``config`` (pgbackrest.conf), ``metrics_dir``, ``lock_dir`` and ``repo``."""
    pw = pwd.getpwnam('postgres')
    config = os.path.join(base, 'pgbackrest.conf')
    dirs = {name: os.path.join(base, name) for name in ('repo', 'log', 'lock', 'spool')}
    cluster = PostgresCluster(base, extra_conf=dict({
        'wal_level': 'replica', 'archive_mode': 'on', 'archive_timeout': '60',
        'archive_command': "'pgbackrest --config=%s --stanza=%s archive-push %%p'" % (config, stanza),
    }, **(extra_conf or {})))
    for path in dirs.values():
        os.makedirs(path)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    with open(config, 'w') as handle:
        handle.write('[global]\nrepo1-path=%(repo)s\nlog-path=%(log)s\nlock-path=%(lock)s\n'
                     'spool-path=%(spool)s\narchive-async=y\ncompress-type=zst\nstart-fast=y\n'
                     'log-level-console=warn\n' % dirs)
        handle.write('[%s]\npg1-path=%s\npg1-port=%d\npg1-socket-path=%s\n'
                     % (stanza, cluster.data, cluster.port, cluster.socket_dir))
    os.chown(config, pw.pw_uid, pw.pw_gid)
    cluster.start()
    cluster.config = config
    cluster.metrics_dir = os.path.join(base, 'metrics')
    cluster.lock_dir = dirs['lock']
    cluster.repo = dirs['repo']
    return cluster
