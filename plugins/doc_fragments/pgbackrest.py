# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    """The pgBackRest repository options of pg_pitr and pg_pitr_info (defined once in
    module_utils/postgres/pgbackrest.py)."""

    DOCUMENTATION = r'''
options:
  stanza:
    description: pgBackRest stanza (one per PostgreSQL cluster).
    type: str
    default: codeb
  repo_user:
    description:
      - OS user that owns the pgBackRest repository. On the repository host pgBackRest runs
        as this user, and a scratch recovery runs its cluster as this user (it reads the
        repository).
      - The host commands take it as C(--repo-user) (or C(--run-as)).
    type: str
    default: pgbackrest
    aliases: [scratch_user]
  config:
    description: pgBackRest configuration file (default pgBackRest's own).
    type: path
requirements:
  - pgBackRest configured for O(stanza) (role C(codeb.backup.postgresql_backup))
'''
