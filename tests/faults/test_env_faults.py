"""The env store under faults, through the real host command: SIGKILL at random and aimed
moments of `env set`, `env backup` and `env restore`; a full store filesystem (and a full
metrics directory); a read-only store; hostile backup-log.json files.

After every fault the store holds only whole, listed versions, the app's .env is the old
or the new content (never a mix), no content the app's .env ever had is lost, and a
failed run exits 1 with a JSON result and records status 0 without touching the last
success time."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.env import envfile
from faults import harness

PROJECT = 'worb'
TARGET = 'worb/production'


def sha(data):
    return hashlib.sha256(data).hexdigest()


def read(path):
    with open(path, 'rb') as handle:
        return handle.read()


def env_text(rng, size=600):
    """A random .env file of roughly ``size`` bytes (its values are the test's secrets)."""
    lines = ['# app %d' % rng.randrange(10 ** 9)]
    while sum(len(line) + 1 for line in lines) < size:
        lines.append('KEY_%d="%s"' % (rng.randrange(10 ** 6),
                                      ''.join(rng.choice('abcdef0123') for _i in range(40))))
    return ('\n'.join(lines) + '\n').encode()


class Site(object):
    """One store, one app .env file, one metrics directory."""

    def __init__(self, base, root=None, metrics_dir=None):
        self.base = str(base)
        self.root = root or os.path.join(self.base, 'store')
        self.metrics_dir = metrics_dir or os.path.join(self.base, 'metrics')
        self.app = os.path.join(self.base, 'app')
        os.makedirs(self.app, exist_ok=True)
        self.dest = os.path.join(self.app, '.env')
        self.values = os.path.join(self.base, 'values.env')
        self.store = os.path.join(self.root, PROJECT, 'production')
        self.seen = []  # every content the app's .env ever had

    def common(self):
        return ['--project', PROJECT, '--root', self.root, '--metrics-dir', self.metrics_dir]

    def backup_args(self):
        return ['env', 'backup', '--src', self.dest, '--trigger', 'manual'] + self.common()

    def set_args(self, values):
        with open(self.values, 'wb') as handle:
            handle.write(''.join('%s=%s\n' % kv for kv in sorted(values.items())).encode())
        return ['env', 'set', '--values-file', self.values, '--dest', self.dest] + self.common()

    def restore_args(self, version):
        return ['env', 'restore', '--version', version, '--dest', self.dest] + self.common()

    def write_live(self, data):
        """A hand edit of the app's .env."""
        with open(self.dest, 'wb') as handle:
            handle.write(data)
        os.chmod(self.dest, 0o600)
        self.saw(data)

    def live(self):
        return read(self.dest) if os.path.exists(self.dest) else None

    def saw(self, data):
        if data is not None and data not in self.seen:
            self.seen.append(data)

    def versions(self):
        path = os.path.join(self.store, 'backup-log.json')
        return json.loads(read(path))['versions'] if os.path.exists(path) else []

    def metrics(self, kind='env'):
        return harness.read_metrics(harness.metrics_file(self.metrics_dir, kind, TARGET))

    def snapshot(self):
        """Every store file's bytes and mode (the lock file only records a pid)."""
        out = {}
        for base, _dirs, files in os.walk(self.root):
            for name in files:
                if name == '.env-backup.lock':
                    continue
                full = os.path.join(base, name)
                out[os.path.relpath(full, self.root)] = (read(full),
                                                         stat.S_IMODE(os.stat(full).st_mode))
        return out


def assert_only_whole_listed_versions(site, complete=True):
    """The store holds only whole, listed versions: every ``*.env`` is master, current or a
    version the log lists; every listed sha256 matches; master.env is the first version;
    no temporaries. ``complete``: current.env is the last version too (after a successful
    run); else it is whole: some listed version."""
    versions = site.versions()
    names = set(os.listdir(site.store))
    assert not [n for n in names if n.startswith('.tmp-')], names
    listed = {v['file'] for v in versions}
    for name in names:
        if name.endswith('.env'):
            assert name in listed | {'master.env', 'current.env'}, (name, sorted(names))
    for entry in versions:
        assert sha(read(os.path.join(site.store, entry['file']))) == entry['sha256'], entry
    if versions:
        assert sha(read(os.path.join(site.store, 'master.env'))) == versions[0]['sha256']
        current = sha(read(os.path.join(site.store, 'current.env')))
        if complete:
            assert current == versions[-1]['sha256']
        else:
            assert current in {v['sha256'] for v in versions}
    for name in names:
        assert stat.S_IMODE(os.stat(os.path.join(site.store, name)).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(site.store).st_mode) == 0o700
    return versions


def assert_no_live_content_lost(site):
    shas = {v['sha256'] for v in site.versions()}
    lost = [i for i, data in enumerate(site.seen) if sha(data) not in shas]
    assert not lost, 'contents the app .env had are missing from the store: %s' % lost


def assert_no_secret_in(site, run):
    for data in site.seen:
        for value in envfile.parse_bytes(data).to_dict().values():
            if len(value) >= 20:
                assert value not in run.out + run.err, 'a secret value was printed'


# ---- kill -9 at random and aimed moments ----

# The operations every trial's command performs at least this often (a restore that saves
# no live edit renames once: dest), so an aimed kill always lands inside the job.
AIMED = ('rename', 'rename+', 'write', 'fsync', 'fsync+')
AT_LEAST = {'set': dict(rename=3, write=3, fsync=6), 'backup': dict(rename=3, write=3, fsync=6),
            'restore': dict(rename=1, write=1, fsync=2)}


def test_random_kills_of_set_backup_and_restore_lose_nothing(tmp_path):
    rng = harness.rng('env-random-kills')
    site = Site(tmp_path)
    site.write_live(env_text(rng))
    harness.run_ok(site.backup_args())
    trials = max(harness.TRIALS, 15)
    for trial in range(trials):
        op = rng.choice(('set', 'backup', 'restore'))
        if op == 'backup' or rng.random() < 0.4 or (
                op == 'restore' and len(site.versions()) < 2):
            site.write_live(env_text(rng))  # someone edits the live file by hand
        old = site.live()
        if op == 'set':
            values = {'KEY_%d' % rng.randrange(100): 'v%d' % rng.randrange(10 ** 6)}
            argv = site.set_args(values)
            edited = envfile.parse_bytes(old)
            edited.apply(values)
            new = edited.to_bytes()
        elif op == 'backup':
            argv, new = site.backup_args(), old
        else:
            versions = site.versions()
            choices = [v for v in versions if v['sha256'] != sha(old)]
            entry = rng.choice(choices)
            version = rng.choice(('master', entry['version'])) if entry is versions[0] \
                else entry['version']
            argv, new = site.restore_args(version), read(os.path.join(site.store,
                                                                      entry['file']))
        if trial % 3 == 2:
            how = dict(kill_after=rng.uniform(0.05, 0.8))
        else:
            kind = rng.choice(AIMED)
            how = dict(at='%s:%d' % (kind, rng.randint(1, AT_LEAST[op][kind.rstrip('+')])))
        run = harness.run_cli(argv, **how)
        if 'at' in how:
            assert run.killed and 'KILL-POINT' in run.err, (trial, op, how, run)
        else:
            assert run.killed or run.rc == 0, (trial, op, how, run)
        live = site.live()
        assert live in (old, new), (trial, op, how, 'the app .env is neither old nor new')
        if not run.killed:
            assert_no_secret_in(site, run)
        # the next run repairs what the killed one left and completes the job
        rerun = harness.run_ok(argv)
        assert_no_secret_in(site, rerun)
        assert site.live() == new, (trial, op, how)
        site.saw(new)
        assert_only_whole_listed_versions(site)
        assert_no_live_content_lost(site)
        assert isinstance(rerun.result['repaired'], list)
        assert site.metrics('env_restore' if op == 'restore' else 'env')[
            'codeb_backup_last_status'] == 1


# ---- a full store filesystem ----

def _fill_and_run(site, fs, leave, argv):
    filler = harness.fill(fs, leave)
    try:
        return harness.run_cli(argv)
    finally:
        os.unlink(filler)


def big_env(rng):
    """Three keys with 4000-byte values: 3 pages of tmpfs, more than the log's one."""
    return ''.join('KEY_%d="%s"\n' % (i, ''.join(rng.choice('abcdef0123') for _i in range(4000)))
                   for i in range(3)).encode()


def test_full_store_fails_cleanly_at_each_write_step(tmp_path):
    rng = harness.rng('env-disk-full')
    with harness.small_fs('1m') as fs:
        site = Site(tmp_path, root=os.path.join(fs, 'store'))
        site.write_live(big_env(rng))
        harness.run_ok(site.backup_args())
        success = site.metrics()['codeb_backup_last_success_timestamp_seconds']
        outcomes = set()
        # free pages: 0-2 stop the version file, 3 the log, 4 current.env (after the commit
        # point), 6 and more let it through
        for leave in (0, 8192, 12288, 16384, 24576, 32768):
            site.write_live(big_env(rng))
            before = site.versions()
            run = _fill_and_run(site, fs, leave, site.backup_args())
            if run.rc == 0:
                success = site.metrics()['codeb_backup_last_success_timestamp_seconds']
                assert_only_whole_listed_versions(site)
                continue
            assert run.rc == 1 and run.result['failed'] is True, run
            assert 'ENOSPC' in run.result['msg'] and 'Traceback' not in run.err, run
            assert_no_secret_in(site, run)
            harness.assert_failure_recorded(site.metrics_dir, 'env', TARGET,
                                            previous_success=success)
            after = assert_only_whole_listed_versions(site, complete=False)  # nothing half-made
            assert after[:len(before)] == before
            outcomes.add((len(after) - len(before),
                          sha(read(os.path.join(site.store, 'current.env')))
                          == after[-1]['sha256']))
            # with the space back, the next run succeeds and completes the store
            harness.run_ok(site.backup_args())
            success = site.metrics()['codeb_backup_last_success_timestamp_seconds']
            assert_only_whole_listed_versions(site)
            assert_no_live_content_lost(site)
        # the failures fell at different steps: before the commit point and after it
        assert len(outcomes) >= 2, outcomes


def test_full_store_never_overwrites_a_live_edit_it_could_not_save(tmp_path):
    rng = harness.rng('env-disk-full-restore')
    with harness.small_fs('1m') as fs:
        site = Site(tmp_path, root=os.path.join(fs, 'store'))
        site.write_live(env_text(rng, 6000))
        harness.run_ok(site.backup_args())
        site.write_live(env_text(rng, 6000))
        harness.run_ok(site.backup_args())
        master = site.versions()[0]['version']
        for argv, kind in ((lambda: site.restore_args(master), 'env_restore'),
                           (lambda: site.set_args({'KEY_1': 'x'}), 'env')):
            previous = site.metrics(kind).get('codeb_backup_last_success_timestamp_seconds') \
                if os.path.exists(harness.metrics_file(site.metrics_dir, kind, TARGET)) else None
            hand_edit = env_text(rng, 6000)
            site.write_live(hand_edit)
            before = site.snapshot()
            filler = harness.fill(fs, 0)
            try:
                run = harness.run_failed(argv())
            finally:
                os.unlink(filler)
            assert 'ENOSPC' in run.result['msg'], run
            assert site.live() == hand_edit  # not overwritten: it could not be saved first
            assert site.snapshot() == before
            harness.assert_failure_recorded(site.metrics_dir, kind, TARGET,
                                            previous_success=previous)
            harness.run_ok(argv())
            assert_only_whole_listed_versions(site)
            assert_no_live_content_lost(site)
            assert site.metrics(kind)['codeb_backup_last_status'] == 1


def test_full_metrics_directory_never_hides_the_outcome(tmp_path):
    rng = harness.rng('env-metrics-full')
    with harness.small_fs('1m') as fs:
        metrics_dir = os.path.join(fs, 'metrics')
        site = Site(tmp_path, root=os.path.join(fs, 'store'), metrics_dir=metrics_dir)
        site.write_live(env_text(rng, 3000))
        harness.run_ok(site.backup_args())
        prom = harness.metrics_file(metrics_dir, 'env', TARGET)
        good = read(prom)
        site.write_live(env_text(rng, 3000))
        filler = harness.fill(fs, 0)
        try:
            run = harness.run_failed(site.backup_args())
        finally:
            os.unlink(filler)
        assert 'ENOSPC' in run.result['msg'], run
        assert run.result.get('metrics_error'), run  # both failures reported, the job's first
        assert read(prom) == good  # the last metrics file is whole (atomic), not half-written
        assert not [n for n in os.listdir(metrics_dir) if n.startswith('.tmp-')]
        assert_only_whole_listed_versions(site, complete=False)
        harness.run_ok(site.backup_args())
        assert site.metrics()['codeb_backup_last_status'] == 1
        assert_only_whole_listed_versions(site)
        assert_no_live_content_lost(site)


# ---- a read-only store ----

def test_read_only_store_fails_cleanly_and_changes_nothing(tmp_path):
    rng = harness.rng('env-read-only')
    with harness.small_fs('1m') as fs:
        site = Site(tmp_path, root=os.path.join(fs, 'store'))
        site.write_live(env_text(rng))
        harness.run_ok(site.backup_args())
        site.write_live(env_text(rng))
        harness.run_ok(site.backup_args())
        master = site.versions()[0]['version']
        successes = {kind: None for kind in ('env', 'env_restore')}
        successes['env'] = site.metrics()['codeb_backup_last_success_timestamp_seconds']
        cases = [(site.backup_args, 'env'), (lambda: site.set_args({'KEY_2': 'y'}), 'env'),
                 (lambda: site.restore_args(master), 'env_restore')]
        for argv, kind in cases:
            hand_edit = env_text(rng)
            site.write_live(hand_edit)
            before = site.snapshot()
            harness.remount(fs, 'ro')
            try:
                run = harness.run_failed(argv())
            finally:
                harness.remount(fs, 'rw')
            assert 'read-only' in run.result['msg'], run
            assert_no_secret_in(site, run)
            assert site.snapshot() == before
            assert site.live() == hand_edit
            harness.assert_failure_recorded(site.metrics_dir, kind, TARGET,
                                            previous_success=successes[kind])
            harness.run_ok(argv())
            successes[kind] = site.metrics(kind)['codeb_backup_last_success_timestamp_seconds']
            assert_only_whole_listed_versions(site)
            assert_no_live_content_lost(site)


# ---- hostile backup-log.json ----

HOSTILE = {
    'traversal': lambda e: dict(e, file='../canary.env'),
    'deep traversal': lambda e: dict(e, file='../../../canary.env'),
    'absolute': lambda e: dict(e, file='/etc/passwd'),
    'hidden': lambda e: dict(e, file='.lock.env'),
    'mismatched version': lambda e: dict(e, version='2000-01-01T00:00:00'),
    'sha256 a list': lambda e: dict(e, sha256=['x']),
    'file a number': lambda e: dict(e, file=7),
    'entry a string': lambda e: '../canary.env',
}


@pytest.mark.parametrize('case', sorted(HOSTILE))
def test_hostile_log_is_refused_and_nothing_outside_the_store_is_touched(tmp_path, case):
    rng = harness.rng('env-hostile-' + case)
    site = Site(tmp_path)
    site.write_live(env_text(rng))
    harness.run_ok(site.backup_args())
    canaries = [os.path.join(site.root, PROJECT, 'canary.env'),
                os.path.join(site.base, 'canary.env')]
    for path in canaries:
        with open(path, 'wb') as handle:
            handle.write(b'CANARY=outside-the-store\n')
    log_path = os.path.join(site.store, 'backup-log.json')
    log = json.loads(read(log_path))
    entry = dict(log['versions'][0], sha256=sha(b'CANARY=outside-the-store\n'))
    log['versions'] = [HOSTILE[case](entry)]
    with open(log_path, 'w') as handle:
        json.dump(log, handle)
    site.write_live(env_text(rng))
    tree_before = _tree(site.base)
    for argv in (site.restore_args('master'), site.restore_args(entry['version']),
                 site.backup_args(), site.set_args({'KEY_3': 'z'}),
                 ['env', 'list', '--project', PROJECT, '--root', site.root, '--verify']):
        tree_before[os.path.relpath(site.values, site.base)] = read(site.values)
        run = harness.run_failed(argv)
        assert 'backup-log.json, version entry 1' in run.result['msg'], run
        assert 'outside-the-store' not in run.out + run.err
        assert _tree(site.base) == tree_before, argv
    for path in canaries:
        assert read(path) == b'CANARY=outside-the-store\n'


def _tree(path):
    out = {}
    for base, _dirs, files in os.walk(path):
        for name in files:
            full = os.path.join(base, name)
            if name == '.env-backup.lock' or full.startswith(os.path.join(path, 'metrics')):
                continue
            out[os.path.relpath(full, path)] = read(full)
    return out
