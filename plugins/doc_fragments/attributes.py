# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    # The attributes every codeb.backup module shares; use together with
    # ansible.builtin.action_common_attributes, which describes them. A module states only
    # what differs (for example diff_mode support none, or check mode details).
    DOCUMENTATION = r'''
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
  diff_mode:
    support: full
'''

    # A module that only reads.
    INFO_MODULE = r'''
attributes:
  platform:
    platforms: posix
  check_mode:
    support: full
    details: Read-only; never changes anything, so check mode behaves exactly like a normal run.
  diff_mode:
    support: none
'''
