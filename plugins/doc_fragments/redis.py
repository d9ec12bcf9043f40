# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    # The Redis connection options every codeb.backup Redis module takes, named as
    # community.general's redis modules name them.
    DOCUMENTATION = r'''
options:
  login_host:
    description: Redis host. Ignored when O(login_unix_socket) is set.
    type: str
    default: 127.0.0.1
  login_port:
    description: Redis port.
    type: int
    default: 6379
  login_user:
    description:
      - ACL user name (Redis 6+). It needs the commands the module runs (C(INFO), C(CONFIG);
        for snapshots C(BGSAVE) and C(TIME); for restores C(SHUTDOWN)).
    type: str
  login_password:
    description: Password (C(requirepass) or the ACL user's). Never logged.
    type: str
  login_unix_socket:
    description: Path of the Redis unix socket; used instead of O(login_host)/O(login_port).
    type: path
  tls:
    description: Connect with TLS.
    type: bool
    default: false
  validate_certs:
    description: Verify the server certificate when O(tls=true).
    type: bool
    default: true
  ca_certs:
    description: CA bundle for O(tls=true).
    type: path
'''

    # The snapshot store options of redis_snapshot and redis_snapshot_info.
    STORE = r'''
options:
  backup_dir:
    description: Directory holding the snapshots and their C(manifest.json). Absolute path.
    type: path
    default: /opt/codeb/db-backup/redis
  snapshot_format:
    description: Restrict the snapshots the task works on to RDB (V(rdb)) or AOF (V(aof)) ones.
    type: str
    choices: [rdb, aof]
'''
