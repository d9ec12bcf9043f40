"""Shared pytest fixtures: real, throwaway PostgreSQL 15 and Redis 7 servers.

Nothing here mocks a server. PostgreSQL runs as the ``postgres`` OS user (it refuses
root) from a temp dir with a random port and its socket in that dir; Redis runs from a
temp dir on a random port. Both are stopped by PID when the fixture ends.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Make ``ansible_collections.codeb.backup`` importable from the checkout.
sys.path.insert(0, os.path.join(ROOT, '.collections'))
sys.path.insert(0, os.path.join(ROOT, 'tests'))

from helpers.servers import PostgresCluster, RedisServer  # noqa: E402


@pytest.fixture(scope='session')
def pg_cluster(tmp_path_factory):
    """A PostgreSQL 15 cluster for the whole session (superuser ``postgres``, password
    auth over TCP, trust over its private unix socket)."""
    # pytest's own temp tree is 0700 root; postgres must be able to reach its data dir.
    base = tempfile.mkdtemp(prefix='codeb-test-pg-')
    cluster = PostgresCluster(base)
    cluster.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def redis_factory(tmp_path_factory):
    """Start Redis 7 instances on demand: ``redis_factory(appendonly=True, password=None,
    extra_config=None)``. Every instance started is stopped at the end of the test."""
    started = []

    def start(**kwargs):
        server = RedisServer(str(tmp_path_factory.mktemp('redis')), **kwargs)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope='session')
def redis_server(tmp_path_factory):
    """One Redis 7 (AOF on) shared by a session's tests that only read or add keys."""
    server = RedisServer(str(tmp_path_factory.mktemp('redis-shared')), appendonly=True)
    server.start()
    yield server
    server.stop()
