"""Fault injection for the blue-green traffic switch and the slot state.

A real nginx (tests/helpers/bluegreen.py) proxies to two tiny apps on loopback that answer
``blue`` and ``green``. The switch runs as the host command (``codeb-backup
traffic-switch``) and is SIGKILLed at chosen operations or after a random delay; whatever
happened, the next switch must leave nginx SERVING the requested slot (an HTTP GET tells),
``traffic-status`` must agree, and no temporary may be left behind. A full or read-only
disk must fail the switch cleanly with nginx still serving the previous slot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from ansible_collections.codeb.backup.plugins.module_utils import durable
from ansible_collections.codeb.backup.plugins.module_utils.bluegreen import slots, traffic
from faults import harness
from helpers.bluegreen import App, Nginx, http_get
from helpers.servers import free_port

PROJECT = 'worb'
FAULTS_DIR = os.path.dirname(os.path.abspath(__file__))


class Site(object):
    """nginx + a blue and a green app; the include and state dirs may be given (tmpfs)."""

    def __init__(self, base, include_dir=None, state_dir=None):
        self.base = base
        self.apps = {slot: App(os.path.join(base, 'app-' + slot)) for slot in traffic.SLOTS}
        for slot, app in self.apps.items():
            app.deploy(slot)
        self.nginx = Nginx(os.path.join(base, 'nginx'), include_dir=include_dir,
                           state_dir=state_dir)
        self.port = free_port()
        self.nginx.write_site(PROJECT, self.port, self.apps['blue'].port, self.apps['green'].port)
        self.started = []

    def start(self):
        for app in self.apps.values():
            app.start()
            self.started.append(app)
        self.nginx.start(self.port)
        self.started.append(self.nginx)
        # a first, complete switch: from now on a switch has recorded what nginx applied
        self.switch_ok('blue')
        assert self.served() == 'blue'

    def stop(self):
        for server in reversed(self.started):
            server.stop()

    def served(self):
        """The slot nginx really sends a new connection to."""
        return http_get(self.port)

    def last_success(self):
        """The success time of the switch's metrics (every run writes them)."""
        return harness.read_metrics(harness.metrics_file(
            self.nginx.metrics_dir, traffic.METRICS_KIND, PROJECT))[
                'codeb_backup_last_success_timestamp_seconds']

    def assert_failure_recorded(self, success):
        harness.assert_failure_recorded(self.nginx.metrics_dir, traffic.METRICS_KIND, PROJECT,
                                        previous_success=success)

    def switch_argv(self, slot):
        return ['traffic-switch', '--project', PROJECT, '--slot', slot] + self.nginx.cli_args()

    def switch_ok(self, slot, **kwargs):
        return harness.run_ok(self.switch_argv(slot), **kwargs)

    def status(self):
        run = harness.run_ok(['traffic-status', '--project', PROJECT,
                              '--include-dir', self.nginx.include_dir,
                              '--state-dir', self.nginx.state_dir])
        return run.result

    def temporaries(self):
        found = []
        for directory in (self.nginx.include_dir, self.nginx.state_dir):
            if os.path.isdir(directory):
                found += [os.path.join(directory, name) for name in os.listdir(directory)
                          if name.startswith(durable.TEMP_PREFIX)]
        return found

    def include_text(self):
        with open(traffic.include_path(self.nginx.include_dir, PROJECT)) as handle:
            return handle.read()

    def assert_serves(self, slot):
        assert self.served() == slot
        status = self.status()
        assert status['slot'] == slot and status['in_sync'] is True, status
        assert self.temporaries() == []


@pytest.fixture
def base():
    path = tempfile.mkdtemp(prefix='codeb-fault-traffic-')
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def site(base):
    site = Site(base)
    try:
        site.start()
        yield site
    finally:
        site.stop()


# Points of a switch: fsync/rename of the include's temporary (fsync:1, rename:1), the
# include directory's fsync (fsync:2: the include is written, nginx not yet tested or
# reloaded), then after the reload the applied record (fsync:3, rename:2, fsync:4). "+"
# kills right after the call.
AIMED = ['write:1', 'fsync:1', 'rename:1', 'rename+:1', 'fsync:2', 'fsync+:2', 'fsync:3',
         'rename:2', 'rename+:2', 'fsync:4']


def test_switch_killed_anywhere_is_completed_by_the_next_switch(site):
    rng = harness.rng('traffic-switch-kill')
    reached = set()
    delay_kills = 0
    # every aimed point once, then TRIALS kills after a random delay. The host command
    # needs about 0.25 s to start and its switch about 0.15 s more on this machine, so the
    # delays mostly land inside the switch.
    for trial in range(len(AIMED) + max(harness.TRIALS, 15)):
        target = traffic.SLOTS[(trial + 1) % 2]
        before = site.served()
        if trial < len(AIMED):
            point = AIMED[trial]
            run = harness.run_cli(site.switch_argv(target), at=point)
            if run.killed:
                assert 'KILL-POINT' in run.err, (point, run)
        else:
            delay = rng.uniform(0.2, 0.5)
            point = 'after %.3f s' % delay
            run = harness.run_cli(site.switch_argv(target), kill_after=delay)
            delay_kills += run.killed
        if run.killed:
            reached.add(point)
        else:
            assert run.rc == 0, (point, run)
        # killed or not, nginx serves one of the two slots, never a broken config
        assert site.served() in (before, target), point
        again = site.switch_ok(target)
        assert again.result['slot'] == target, (point, again)
        site.assert_serves(target)
    # the aimed kills between the include write and the reload really happened
    assert {'rename+:1', 'fsync:2', 'fsync:3'} <= reached, reached
    assert delay_kills >= 3, delay_kills


def test_status_tells_what_nginx_serves_after_a_kill_before_the_reload(site):
    run = harness.run_cli(site.switch_argv('green'), at='rename+:1')
    assert run.killed, run
    assert traffic.read_active(site.nginx.include_dir, PROJECT) == 'green'  # the file moved on
    assert site.served() == 'blue'                                          # nginx did not
    status = site.status()
    assert status['slot'] == 'blue' and status['include_slot'] == 'green', status
    assert status['in_sync'] is False and 'traffic-switch' in status['msg'], status
    # a switch to the slot nginx really serves puts the include back in line
    again = site.switch_ok('blue')
    assert again.result['changed'] is True, again
    site.assert_serves('blue')
    assert traffic.read_active(site.nginx.include_dir, PROJECT) == 'blue'


def _failed_cleanly(site, slot_before, include_before):
    assert site.served() == slot_before
    assert site.include_text() == include_before
    assert site.temporaries() == []


def test_full_include_disk_fails_cleanly_and_keeps_traffic(base):
    with harness.small_fs('1m') as include_dir:
        site = Site(base, include_dir=include_dir)
        try:
            site.start()
            include_before = site.include_text()
            success = site.last_success()
            filler = harness.fill(include_dir)
            run = harness.run_failed(site.switch_argv('green'))
            assert 'full' in run.result['msg'], run
            site.assert_failure_recorded(success)
            _failed_cleanly(site, 'blue', include_before)
            assert site.status()['slot'] == 'blue'
            os.unlink(filler)
            site.switch_ok('green')
            site.assert_serves('green')
        finally:
            site.stop()


def test_full_state_disk_puts_the_include_back_and_reloads(base):
    with harness.small_fs('1m') as state_dir:
        site = Site(base, state_dir=state_dir)
        try:
            site.start()
            include_before = site.include_text()
            success = site.last_success()
            filler = harness.fill(state_dir)
            run = harness.run_failed(site.switch_argv('green'))
            assert 'full' in run.result['msg'] and 'stays on blue' in run.result['msg'], run
            site.assert_failure_recorded(success)
            _failed_cleanly(site, 'blue', include_before)
            os.unlink(filler)
            assert site.status()['slot'] == 'blue'
            site.switch_ok('green')
            site.assert_serves('green')
        finally:
            site.stop()


def test_read_only_include_dir_fails_cleanly_and_keeps_traffic(base):
    with harness.small_fs('1m') as include_dir:
        site = Site(base, include_dir=include_dir)
        try:
            site.start()
            include_before = site.include_text()
            success = site.last_success()
            harness.remount(include_dir, 'ro')
            try:
                run = harness.run_failed(site.switch_argv('green'))
                assert 'read-only' in run.result['msg'], run
                site.assert_failure_recorded(success)
                _failed_cleanly(site, 'blue', include_before)
            finally:
                harness.remount(include_dir, 'rw')
            site.switch_ok('green')
            site.assert_serves('green')
        finally:
            site.stop()


# ------------------------------------------------------------------- slot state writes

_RECORD = '''
import sys
sys.path.insert(0, %(faults)r)
import killer
killer.install(%(op)r, %(nth)d, %(after)r)
from ansible_collections.codeb.backup.plugins.module_utils.bluegreen import slots
slots.record_deploy(%(state_dir)r, %(project)r, %(version)r)
'''


def _record_killed(state_dir, version, point):
    op, _sep, nth = point.partition(':')
    code = _RECORD % dict(faults=FAULTS_DIR, op=op.rstrip('+'), nth=int(nth),
                          after=op.endswith('+'), state_dir=state_dir, project=PROJECT,
                          version=version)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120, check=False)
    return proc


def test_slot_state_write_killed_at_rename_stays_valid_and_is_cleaned(base):
    state_dir = os.path.join(base, 'slots')
    slots.record_deploy(state_dir, PROJECT, 'v0')
    path = slots.state_path(state_dir, PROJECT)
    rng = harness.rng('slot-state-kill')
    version = 0
    for trial in range(max(harness.TRIALS, 15)):
        with open(path) as handle:
            old = json.load(handle)
        version += 1
        point = rng.choice(['rename:1', 'rename+:1', 'fsync:1', 'write:1'])
        proc = _record_killed(state_dir, 'v%d' % version, point)
        assert proc.returncode == -9 and 'KILL-POINT' in proc.stderr, (point, proc.stderr)
        with open(path) as handle:
            now = json.load(handle)                     # always valid JSON
        assert now in (old,) or now['generation'] == old['generation'] + 1, (point, now)
        if now == old:
            assert now[now['activeSlot']]['version'] == 'v%d' % (version - 1)
        else:
            assert now[now['activeSlot']]['version'] == 'v%d' % version
        stale = [n for n in os.listdir(state_dir) if n.startswith(durable.TEMP_PREFIX)]
        if point in ('rename:1', 'fsync:1', 'write:1'):
            assert stale, (point, os.listdir(state_dir))    # a killed write left one
        # the next write of the state, under its lock, removes them
        version += 1
        slots.record_deploy(state_dir, PROJECT, 'v%d' % version)
        assert [n for n in os.listdir(state_dir) if n.startswith(durable.TEMP_PREFIX)] == []
        assert slots.load(state_dir, PROJECT)[
            slots.load(state_dir, PROJECT)['activeSlot']]['version'] == 'v%d' % version
