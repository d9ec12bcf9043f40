# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The metrics collector: facts that no job metric carries (pgBackRest, WAL archiving and
replication, Redis persistence), read from the sources themselves by
``codeb-backup collect-metrics`` and written for node_exporter's textfile collector."""
