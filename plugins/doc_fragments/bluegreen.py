# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    # The project option of the blue-green modules (defined once in
    # module_utils/bluegreen/options.py).
    DOCUMENTATION = r'''
options:
  project:
    description:
      - The project (one path component; letters, digits, C(_), C(-) and C(.)).
    type: str
    required: true
'''
