# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    # Where an env store is: the options every env module takes (defined once in
    # module_utils/env/options.py).
    DOCUMENTATION = r'''
options:
  project:
    description:
      - The project (one path component; letters, digits, C(_), C(-) and C(.), starting with a
        letter or digit, at most 63 characters).
    type: str
    required: true
  environment:
    description:
      - The environment, named like O(project).
    type: str
    default: production
  root:
    description:
      - Root of the env store (an absolute path).
    type: path
    default: /opt/codeb/env-backup
'''
