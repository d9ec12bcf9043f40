# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup status API: one authenticated answer to "are a project's backups healthy?",
served on the backup host by ``codeb-backup serve-api`` from the facts the metrics carry."""
