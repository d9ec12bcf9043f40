# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of ``codeb-backup collect-metrics``, each defined once.

The PostgreSQL and Redis connection options are the subsystems' own definitions
(``postgres.connection.CONNECTION_OPTIONS``, ``redis.options.CONNECTION_OPTIONS``) under a
``postgres_`` / ``redis_`` prefix, because one run may connect to both: ``--postgres-port``
and ``--redis-port`` are the same option as ``pg-snapshot --login-port`` and
``redis-snapshot --login-port``, with their types and defaults.
"""

from __future__ import annotations

from ansible_collections.codeb.backup.plugins.module_utils import metrics
from ansible_collections.codeb.backup.plugins.module_utils.postgres import connection as pg_connection
from ansible_collections.codeb.backup.plugins.module_utils.postgres import pgbackrest as pb
from ansible_collections.codeb.backup.plugins.module_utils.redis import options as redis_options
from ansible_collections.codeb.backup.plugins.module_utils.spec import Option, prefixed

from ansible_collections.codeb.backup.plugins.module_utils.monitor.postgres_facts import DEFAULT_CLUSTER


PG_NAMES, PG_CONNECTION = prefixed(
    'postgres_', pg_connection.CONNECTION_OPTIONS + (pg_connection.PASSWORD_FILE_OPTION,),
    renames=dict(pg_bin_dir='bin_dir'))
REDIS_NAMES, REDIS_CONNECTION = prefixed(
    'redis_', redis_options.CONNECTION_OPTIONS + (Option(
        'login_password_file', type='path',
        help='file (0600) holding the password; else $REDISCLI_AUTH is used'),))

PGBACKREST = (
    Option('pgbackrest_stanza', type='list', elements='str',
           help='collect the pgBackRest facts of this stanza (repeat for several)'),
    Option('pgbackrest_check', type='bool', default=False,
           help='also run pgbackrest check and record its exit code'),
    pb.option('repo_user').replace(name='pgbackrest_repo_user', aliases=(), flag_aliases=()),
    pb.option('config').replace(name='pgbackrest_config'),
)
POSTGRES = (
    Option('postgres', type='bool', default=False,
           help='collect WAL archiving and replication facts of a PostgreSQL cluster'),
    Option('postgres_cluster', default=DEFAULT_CLUSTER,
           help='the cluster label of the PostgreSQL metrics'),
) + PG_CONNECTION
REDIS = (
    Option('redis', type='bool', default=False, help='collect Redis persistence facts'),
    Option('redis_name',
           help='the redis label (the instance name the redis_backup role uses); '
                'default the port, or the socket file name'),
    Option('redis_expect_aof', type='bool', default=False,
           help='this instance must run with appendonly on'),
) + REDIS_CONNECTION

OPTIONS = PGBACKREST + POSTGRES + REDIS + (metrics.METRICS_DIR_OPTION,)
