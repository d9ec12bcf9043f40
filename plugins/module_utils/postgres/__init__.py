# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PostgreSQL subsystem: one connection layer (``connection``) that every PostgreSQL
job uses, and the per-database snapshots built on it (``options``, ``store``,
``snapshot``, ``restore``, ``cli``), and pgBackRest backups and point-in-time recovery
(``pgbackrest``, ``pitr``)."""
