# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    # The PostgreSQL connection options every codeb.backup PostgreSQL module takes, named
    # as community.postgresql's modules name them; their one definition is
    # module_utils/postgres/connection.py (CONNECTION_OPTIONS).
    DOCUMENTATION = r'''
options:
  login_host:
    description:
      - Host name or address of the server. Empty connects over the unix socket in
        O(login_unix_socket).
    type: str
    default: ''
    aliases: [host]
  login_port:
    description: Port of the server (also the number of its unix socket file).
    type: int
    default: 5432
    aliases: [port]
  login_user:
    description: Role to connect as; it must be allowed to read every object (a superuser).
    type: str
    default: postgres
    aliases: [login]
  login_password:
    description:
      - Password of O(login_user). It is passed to the tools in C(PGPASSWORD), never on a
        command line. Omit it to use C(~/.pgpass) or peer authentication.
      - The host command C(codeb-backup) never takes it as an argument; it reads
        C(--login-password-file) (mode 0600, owned by the caller) or C($CODEB_PG_PASSWORD).
    type: str
    aliases: [password]
  login_unix_socket:
    description:
      - Directory of the server's unix socket, used when O(login_host) is empty. An empty
        string uses libpq's compiled-in default.
    type: path
    default: /var/run/postgresql
    aliases: [unix_socket]
  maintenance_db:
    description: Database to connect to for server-wide statements (creating, renaming and
      dropping databases).
    type: str
    default: postgres
  connect_timeout:
    description: Seconds libpq waits for a connection.
    type: int
    default: 10
  os_user:
    description:
      - Run C(psql), C(pg_dump) and C(pg_restore) as this OS user (for example V(postgres),
        for peer authentication over the unix socket) while the files the module writes
        stay owned by the module's user. Needs root, unless it is the module's own user.
    type: str
    aliases: [pg_user]
  pg_bin_dir:
    description: Directory of the PostgreSQL client tools.
    type: path
    default: /usr/lib/postgresql/15/bin
    aliases: [pg_bin]
notes:
  - The modules drive the PostgreSQL client tools (C(psql), C(pg_dump), C(pg_restore)) and
    need no Python database driver on the managed host.
requirements:
  - PostgreSQL 15 client tools (package C(postgresql-client-15)) on the managed host.
'''
