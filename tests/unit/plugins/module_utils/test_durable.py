"""Durable writes: a file appears whole or not at all, and a killed writer's temporaries are found."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import durable


def test_atomic_path_commits_only_on_success(tmp_path):
    final = tmp_path / 'a.dump'
    with pytest.raises(RuntimeError):
        with durable.atomic_path(str(final)) as temp:
            with open(temp, 'w') as handle:
                handle.write('half')
            raise RuntimeError('tool died')
    assert os.listdir(tmp_path) == []
    with durable.atomic_path(str(final)) as temp:
        with open(temp, 'w') as handle:
            handle.write('whole')
    assert final.read_text() == 'whole'
    assert oct(final.stat().st_mode & 0o777) == oct(0o600)
    assert os.listdir(tmp_path) == ['a.dump']


def _write_forever(final):
    with durable.atomic_path(final) as temp:
        with open(temp, 'wb') as handle:
            while True:
                handle.write(b'x' * 65536)
                handle.flush()


def test_killed_writer_leaves_no_final_file_and_temps_are_cleaned(tmp_path):
    final = str(tmp_path / 'big.rdb')
    proc = multiprocessing.get_context('fork').Process(target=_write_forever, args=(final,))
    proc.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            n.startswith(durable.TEMP_PREFIX) and os.path.getsize(tmp_path / n) > 0
            for n in os.listdir(tmp_path)):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    names = os.listdir(tmp_path)
    assert 'big.rdb' not in names
    assert names and all(n.startswith(durable.TEMP_PREFIX) for n in names)
    assert durable.remove_stale_temps(str(tmp_path)) == names
    assert os.listdir(tmp_path) == []


def test_durable_copy_hashes_what_it_wrote(tmp_path):
    src = tmp_path / 'src'
    src.write_bytes(os.urandom(3 * durable.CHUNK + 17))
    digest, size = durable.durable_copy(str(src), str(tmp_path / 'dst'))
    assert size == src.stat().st_size
    assert digest == durable.sha256_file(str(src)) == durable.sha256_file(str(tmp_path / 'dst'))


def test_temps_of_matches_only_that_files_temporaries(tmp_path):
    mine = durable.temp_path(str(tmp_path / 'worb.json'))
    other = durable.temp_path(str(tmp_path / 'worb.json.json'))
    assert durable.remove_stale_temps(str(tmp_path), durable.temps_of('worb.json')) == \
        [os.path.basename(mine)]
    assert os.path.exists(other)
