"""The fault-injection suite runs as root: it mounts small tmpfs filesystems to fill and
remount read-only, and kills the host command at chosen moments."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        raise pytest.UsageError('tests/faults needs root (it mounts tmpfs); run it as root')
