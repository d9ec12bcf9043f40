"""What is under a directory, to prove a refused or repeated run changed nothing."""

from __future__ import annotations

import os


def file_contents(path):
    """``{relative path: bytes}`` of every file under ``path``."""
    found = {}
    for base, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(base, name)
            with open(full, 'rb') as handle:
                found[os.path.relpath(full, path)] = handle.read()
    return found
