"""The harness starts real servers: prove they answer and enforce authentication."""

from __future__ import annotations

import os
import subprocess

import pytest


def test_pg_cluster_is_real_postgresql_15(pg_cluster):
    assert pg_cluster.psql('SHOW server_version_num').startswith('15')
    pg_cluster.create_database('harness-Check')
    assert 'harness-Check' in pg_cluster.psql('SELECT datname FROM pg_database')


def test_pg_cluster_refuses_wrong_password_over_tcp(pg_cluster):
    env = dict(os.environ, PGPASSWORD='wrong')
    proc = subprocess.run([os.path.join(pg_cluster.bin, 'psql'), '-h', '127.0.0.1', '-p',
                           str(pg_cluster.port), '-U', 'postgres', '-c', 'select 1'],
                          env=env, capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert 'password authentication failed' in proc.stderr


def test_redis_factory_with_password(redis_factory):
    import redis
    server = redis_factory(password='s3cret')
    assert server.client().set('k', 'v')
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host=server.host, port=server.port, password='wrong').ping()
    assert server.client().info('server')['redis_version'].startswith('7.')
