"""The env store: versions, master immutability, restore, bad input, permissions, metrics,
locks, and consistency after kill -9 at every step of the write path."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from ansible_collections.codeb.backup.plugins.module_utils.env import jobs as env_store
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError, LockTimeout
from faults import harness

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *(['..'] * 5)))
A = b'# app\nexport DB_URL="postgres://u:pw@db/worb"\nSECRET=alpha # rotated\n'
B = b'# app\nexport DB_URL="postgres://u:pw@db/worb"\nSECRET=beta # rotated\nNEW=1\n'
C = b'# app\nSECRET=gamma # rotated\n'


def sha(data):
    return hashlib.sha256(data).hexdigest()


def backup(root, data, project='worb', environment='production', **kw):
    kw.setdefault('metrics_dir', '')
    return env_store.backup(str(root), project, environment, content=data.decode(), **kw)


def store_dir(root, project='worb', environment='production'):
    return os.path.join(str(root), project, environment)


def read(path):
    with open(path, 'rb') as handle:
        return handle.read()


def log_versions(root, project='worb', environment='production'):
    return json.loads(read(os.path.join(store_dir(root, project, environment),
                                        'backup-log.json')))['versions']


def snapshot_tree(path):
    """{relative path: (bytes, mode)} of everything under path."""
    result = {}
    if not os.path.exists(path):
        return result
    for base, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(base, name)
            mode = stat.S_IMODE(os.lstat(full).st_mode)
            result[os.path.relpath(full, path)] = (read(full) if name in files else None, mode)
    return result


def test_layout_log_and_permissions(tmp_path):
    root = tmp_path / 'store'
    first = backup(root, A, trigger='deploy')
    assert first['changed'] and first['master_created']
    assert first['keys_added'] == ['DB_URL', 'SECRET']
    second = backup(root, B, trigger='set')
    assert second['keys_added'] == ['NEW'] and second['keys_changed'] == ['SECRET']
    assert second['keys_removed'] == []
    third = backup(root, C, trigger='daily')
    assert third['keys_removed'] == ['DB_URL', 'NEW'] and third['keys_changed'] == ['SECRET']

    directory = store_dir(root)
    versions = log_versions(root)
    assert [v['trigger'] for v in versions] == ['deploy', 'set', 'daily']
    assert [v['sha256'] for v in versions] == [sha(A), sha(B), sha(C)]
    stamps = [v['version'] for v in versions]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3
    expected = {'master.env', 'current.env', 'backup-log.json', '.env-backup.lock'}
    expected |= {s + '.env' for s in stamps}
    assert set(os.listdir(directory)) == expected
    assert read(os.path.join(directory, 'master.env')) == A
    assert read(os.path.join(directory, 'current.env')) == C
    for stamp, data in zip(stamps, (A, B, C)):
        assert read(os.path.join(directory, stamp + '.env')) == data
    # values are never in the log
    log_text = read(os.path.join(directory, 'backup-log.json'))
    for secret in (b'alpha', b'beta', b'gamma', b'pw@db'):
        assert secret not in log_text
    # 0700 directories, 0600 files
    for path in (str(root), os.path.join(str(root), 'worb'), directory):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
    for name in os.listdir(directory):
        assert stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode) == 0o600, name


def test_unchanged_content_makes_no_new_version(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    before = snapshot_tree(str(root))
    again = backup(root, A, trigger='daily')
    assert again['changed'] is False and again['created'] is False
    assert again['version'] == log_versions(root)[0]['version']
    assert snapshot_tree(str(root)) == before


def test_master_is_immutable(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    master = os.path.join(store_dir(root), 'master.env')
    inode = os.stat(master).st_ino
    for data in (B, C, A, B):
        backup(root, data)
    assert read(master) == A
    assert os.stat(master).st_ino == inode  # never even replaced by an identical copy
    assert [v['master'] for v in log_versions(root)] == [True, False, False, False, False]


def test_values_edit_records_version_and_keeps_other_lines(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    result = env_store.backup(str(root), 'worb', values={'SECRET': 'new value', 'ADDED': 'x'},
                              metrics_dir='')
    assert result['trigger'] == 'set'
    assert result['keys_added'] == ['ADDED'] and result['keys_changed'] == ['SECRET']
    current = read(os.path.join(store_dir(root), 'current.env'))
    assert current == (b'# app\nexport DB_URL="postgres://u:pw@db/worb"\n'
                       b'SECRET="new value" # rotated\nADDED=x\n')
    again = env_store.backup(str(root), 'worb', values={'SECRET': 'new value'}, metrics_dir='')
    assert again['changed'] is False
    assert len(log_versions(root)) == 2


def test_restore_master_current_and_timestamp(tmp_path):
    root = tmp_path / 'store'
    for data in (A, B, C):
        backup(root, data)
    stamps = [v['version'] for v in log_versions(root)]
    dest = tmp_path / 'app' / '.env'
    dest.parent.mkdir()
    for version, data in (('master', A), ('current', C), (stamps[1], B), (stamps[0] + '.env', A)):
        result = env_store.restore(str(root), 'worb', version=version, dest=str(dest),
                                   metrics_dir='')
        assert result['changed'] is True
        assert read(str(dest)) == data
        assert stat.S_IMODE(os.stat(str(dest)).st_mode) == 0o600
        again = env_store.restore(str(root), 'worb', version=version, dest=str(dest),
                                  metrics_dir='')
        assert again['changed'] is False
    # only the final file and no temporaries are left beside dest
    assert os.listdir(str(dest.parent)) == ['.env']


def test_restore_sets_mode_owner_group_and_follows_symlink(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    real = tmp_path / 'shared.env'
    real.write_bytes(b'OLD=1\n')
    link = tmp_path / '.env'
    link.symlink_to(real)
    result = env_store.restore(str(root), 'worb', dest=str(link), owner='nobody',
                               group='nogroup', mode='0640', metrics_dir='')
    assert result['keys_added'] == ['DB_URL', 'SECRET'] and result['keys_removed'] == ['OLD']
    assert os.path.islink(str(link))
    st = os.stat(str(real))
    assert read(str(real)) == A
    assert stat.S_IMODE(st.st_mode) == 0o640
    import grp
    import pwd
    assert st.st_uid == pwd.getpwnam('nobody').pw_uid
    assert st.st_gid == grp.getgrnam('nogroup').gr_gid


def test_check_mode_predicts_and_writes_nothing(tmp_path):
    root = tmp_path / 'store'
    predicted = backup(root, A, check_mode=True)
    assert predicted['changed'] and predicted['master_created']
    assert not os.path.exists(str(root))
    backup(root, A)
    before = snapshot_tree(str(root))
    predicted = backup(root, B, check_mode=True)
    assert predicted['changed'] and predicted['keys_changed'] == ['SECRET']
    assert 'beta' not in json.dumps(predicted) and 'alpha' not in json.dumps(predicted)
    dest = tmp_path / '.env'
    restored = env_store.restore(str(root), 'worb', dest=str(dest), check_mode=True,
                                 metrics_dir='')
    assert restored['changed'] is True
    assert not dest.exists()
    assert snapshot_tree(str(root)) == before


BAD_NAMES = ['../../etc', 'a/b', '.', '', 'x' * 300, '..', '-rf']


@pytest.mark.parametrize('param', ['project', 'environment'])
@pytest.mark.parametrize('bad', BAD_NAMES)
def test_bad_names_are_refused_and_nothing_is_written(tmp_path, param, bad):
    root = tmp_path / 'store'
    names = {'project': 'worb', 'environment': 'production'}
    names[param] = bad
    metrics = tmp_path / 'metrics'
    with pytest.raises(BackupError) as info:
        env_store.backup(str(root), names['project'], names['environment'],
                         content=A.decode(), metrics_dir=str(metrics))
    assert info.value.param == param and param in info.value.msg
    with pytest.raises(BackupError) as info:
        env_store.restore(str(root), names['project'], names['environment'],
                          dest=str(tmp_path / '.env'), metrics_dir=str(metrics))
    assert info.value.param == param
    with pytest.raises(BackupError) as info:
        env_store.listing(str(root), names['project'], names['environment'])
    assert info.value.param == param
    assert os.listdir(str(tmp_path)) == []


def test_unknown_version_lists_available_and_writes_nothing(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    backup(root, B)
    stamps = [v['version'] for v in log_versions(root)]
    dest = tmp_path / '.env'
    dest.write_bytes(b'KEEP=1\n')
    before = snapshot_tree(str(tmp_path))
    for bad in ('2020-01-01T00:00:00', 'latest', '../master', '', stamps[0] + 'x'):
        with pytest.raises(BackupError) as info:
            env_store.restore(str(root), 'worb', version=bad, dest=str(dest), metrics_dir='')
        assert info.value.param == 'version'
        assert 'master, current, %s, %s' % tuple(stamps) in info.value.msg
        assert info.value.details['available'] == ['master', 'current'] + stamps
    assert snapshot_tree(str(tmp_path)) == before


@pytest.mark.parametrize('kwargs,param', [
    (dict(dest='relative/.env'), 'dest'),
    (dict(dest='/nonexistent-dir-codeb/.env'), 'dest'),
    (dict(mode='rw-r--r--'), 'mode'),
    (dict(mode='01777'), 'mode'),
    (dict(owner='no-such-user-codeb'), 'owner'),
    (dict(group='no-such-group-codeb'), 'group'),
])
def test_bad_restore_options_name_the_parameter(tmp_path, kwargs, param):
    root = tmp_path / 'store'
    backup(root, A)
    args = dict(dest=str(tmp_path / '.env'), metrics_dir='')
    args.update(kwargs)
    with pytest.raises(BackupError) as info:
        env_store.restore(str(root), 'worb', **args)
    assert info.value.param == param
    assert not (tmp_path / '.env').exists()


def test_bad_backup_input(tmp_path):
    root = tmp_path / 'store'
    with pytest.raises(BackupError) as info:
        env_store.backup(str(root), 'worb', src=str(tmp_path / 'missing.env'), metrics_dir='')
    assert info.value.param == 'src'
    with pytest.raises(BackupError) as info:
        backup(root, A, trigger='hourly')
    assert info.value.param == 'trigger'
    with pytest.raises(BackupError) as info:
        env_store.backup(str(root), 'worb', values={'DEBUG': True}, metrics_dir='')
    assert info.value.param == 'values'
    with pytest.raises(BackupError) as info:
        env_store.backup('relative/root', 'worb', content='A=1', metrics_dir='')
    assert info.value.param == 'root'
    assert not root.exists()


def test_restore_refuses_a_tampered_version(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    backup(root, B)
    master = os.path.join(store_dir(root), 'master.env')
    os.chmod(master, 0o600)
    with open(master, 'ab') as handle:
        handle.write(b'EVIL=1\n')
    dest = tmp_path / '.env'
    with pytest.raises(BackupError) as info:
        env_store.restore(str(root), 'worb', version='master', dest=str(dest), metrics_dir='')
    assert 'sha256' in info.value.msg
    assert not dest.exists()
    listing = env_store.listing(str(root), 'worb')
    assert any('master.env' in p for p in listing['problems'])
    with pytest.raises(BackupError):
        env_store.listing(str(root), 'worb', verify=True)


def test_unknown_log_layout_is_refused_untouched(tmp_path):
    directory = tmp_path / 'store' / 'worb' / 'production'
    directory.mkdir(parents=True)
    (directory / 'backup-log.json').write_text('[{"seed": "log"}]')
    with pytest.raises(BackupError) as info:
        backup(tmp_path / 'store', A)
    assert 'unknown layout' in info.value.msg
    assert os.listdir(str(directory)) == ['backup-log.json']


def test_listing(tmp_path):
    root = tmp_path / 'store'
    assert env_store.listing(str(root), 'worb')['exists'] is False
    backup(root, A, environment='staging')
    missing = env_store.listing(str(root), 'worb')
    assert missing['count'] == 0 and missing['available_environments'] == ['staging']
    backup(root, B, environment='staging', trigger='deploy')
    listing = env_store.listing(str(root), 'worb', 'staging', verify=True)
    assert listing['count'] == 2 and listing['problems'] == []
    assert listing['versions'][1]['trigger'] == 'deploy'
    assert listing['versions'][1]['keys_changed'] == ['SECRET']
    assert listing['master'] == listing['versions'][0]['version']
    assert listing['current'] == listing['versions'][1]['version']
    assert [f['name'] for f in listing['files']][-3:] == ['master.env', 'current.env',
                                                          'backup-log.json']


def test_metrics_success_and_failure(tmp_path):
    root = tmp_path / 'store'
    metrics = tmp_path / 'metrics'
    backup(root, A, metrics_dir=str(metrics))
    prom = metrics / 'codeb_backup_env_worb_production.prom'
    text = prom.read_text()
    assert 'codeb_backup_last_status{kind="env",target="worb/production"} 1' in text
    assert 'codeb_backup_last_size_bytes{kind="env",target="worb/production"} %d' % len(A) in text
    success = [line for line in text.splitlines() if line.startswith(
        'codeb_backup_last_success_timestamp_seconds')]
    with pytest.raises(BackupError):
        env_store.backup(str(root), 'worb', src=str(tmp_path / 'gone.env'),
                         metrics_dir=str(metrics))
    text = prom.read_text()
    assert 'codeb_backup_last_status{kind="env",target="worb/production"} 0' in text
    assert [line for line in text.splitlines() if line.startswith(
        'codeb_backup_last_success_timestamp_seconds')] == success
    env_store.restore(str(root), 'worb', dest=str(tmp_path / '.env'), metrics_dir=str(metrics))
    assert 'kind="env_restore"' in (metrics / 'codeb_backup_env_restore_worb_production.prom'
                                    ).read_text()


# ---- kill -9 during a write, through the host CLI and the real write path ----

CLI = ('import sys; sys.path.insert(0, %r); '
       'from ansible_collections.codeb.backup.plugins.module_utils.cli import main; '
       'sys.exit(main())' % os.path.join(ROOT, '.collections'))


def cli(args, env=None, stdin=None):
    return subprocess.Popen([sys.executable, '-c', CLI] + args, env=dict(os.environ, **(env or {})),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def cli_backup_args(root, src):
    return ['env', 'backup', '--project', 'worb', '--root', str(root), '--src', str(src),
            '--metrics-dir', '', '--trigger', 'manual']


def assert_consistent(root, allowed_current):
    """What a reader may rely on at any moment, even right after a kill."""
    directory = store_dir(root)
    versions = log_versions(root) if os.path.exists(os.path.join(directory,
                                                                 'backup-log.json')) else []
    for entry in versions:  # no log entry without its whole file
        assert sha(read(os.path.join(directory, entry['file']))) == entry['sha256']
    master = os.path.join(directory, 'master.env')
    if versions and os.path.exists(master):
        assert sha(read(master)) == versions[0]['sha256']
    if versions:  # master is restorable even before a killed first run wrote master.env
        probe = env_store.restore(str(root), 'worb', version='master', check_mode=True,
                                  dest=os.path.join(os.path.dirname(str(root)), 'probe.env'))
        assert probe['sha256'] == versions[0]['sha256']  # (read and verified, check mode)
    current = os.path.join(directory, 'current.env')
    if os.path.exists(current):
        assert read(current) in allowed_current  # whole, never partial
    listing = env_store.listing(str(root), 'worb')
    assert [v['version'] for v in listing['versions']] == [v['version'] for v in versions]
    return versions


def assert_fully_consistent(root, contents):
    directory = store_dir(root)
    versions = log_versions(root)
    assert [v['sha256'] for v in versions] == [sha(c) for c in contents]
    files = set(os.listdir(directory))
    assert files == ({'master.env', 'current.env', 'backup-log.json', '.env-backup.lock'}
                     | {v['file'] for v in versions})  # no orphan version, no temporary
    assert read(os.path.join(directory, 'master.env')) == contents[0]
    assert read(os.path.join(directory, 'current.env')) == contents[-1]


# Each step of the write path as the operation the killer stops the real CLI at (the hooks
# live in tests/faults/killer.py; production code has none). A backup into a clean store
# renames (1) the version file, (2) backup-log.json, then (3) master.env on the first
# version, and current.env last.
KILL_AT = {
    'version_temp': 'rename:1',       # version bytes written and fsynced, not yet renamed
    'version_written': 'rename+:1',   # version file in place, log not yet written
    'log_committed': 'rename+:2',     # the commit point passed
    'master_written': 'rename+:3',    # first version: master.env written, current.env not
    'current_written': 'rename+:3',   # later version: everything written
}


def killed_cli(args, at):
    proc = subprocess.run([sys.executable, harness.KILLER, '--at', at, '--'] + args,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert ('KILL-POINT %s' % at.replace('+:', ':') + ('+' if '+' in at else '')).encode() \
        in proc.stderr, proc.stderr
    return proc


def test_second_run_waits_for_the_lock_then_fails_clearly(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import sys; sys.path.insert(0, %r); '
         'from ansible_collections.codeb.backup.plugins.module_utils.env.store import EnvStore; '
         'lock = EnvStore(%r, "worb")._lock(1); lock.__enter__(); '
         'print("locked", flush=True); sys.stdin.read()'
         % (os.path.join(ROOT, '.collections'), str(root))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b'locked\n'
        with pytest.raises(LockTimeout) as info:
            backup(root, C, lock_timeout=0.3)
        assert 'another env backup of worb/production is running' in info.value.msg
        assert info.value.details['holder_pid'] == str(holder.pid)
        assert len(log_versions(root)) == 1
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert backup(root, C)['created'] is True  # the kernel released the dead holder's lock


@pytest.mark.parametrize('step,first', [
    ('version_temp', False), ('version_written', False), ('log_committed', False),
    ('current_written', False),
    ('version_temp', True), ('version_written', True), ('log_committed', True),
    ('master_written', True),
])
def test_kill_9_at_each_write_step_leaves_store_consistent(tmp_path, step, first):
    root = tmp_path / 'store'
    if not first:
        backup(root, A)
    src = tmp_path / 'app.env'
    new = B if not first else A
    src.write_bytes(new)
    killed_cli(cli_backup_args(root, src), KILL_AT[step])
    assert_consistent(root, allowed_current=(A, B))
    # the next run repairs under the lock and completes the job exactly once
    rerun = cli(cli_backup_args(root, src))
    out, err = rerun.communicate()
    assert rerun.returncode == 0, err
    result = json.loads(out)
    contents = [A] if first else [A, B]
    assert_fully_consistent(root, contents)
    # a whole version file renamed into place but not yet logged is adopted, not thrown away
    committed = step != 'version_temp'
    assert result['created'] is not committed
    if step in ('version_temp', 'version_written'):
        assert result['repaired'], 'the temporary removed / the version adopted must be reported'


def test_kill_9_at_a_random_moment_of_a_large_write(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    big = b''.join(b'KEY_%06d="%s"\n' % (i, b'v' * 200) for i in range(60000))  # ~12 MiB
    src = tmp_path / 'big.env'
    src.write_bytes(big)
    proc = cli(cli_backup_args(root, src))
    time.sleep(0.15)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    versions = assert_consistent(root, allowed_current=(A, big))
    assert len(versions) in (1, 2)
    rerun = cli(cli_backup_args(root, src))
    err = rerun.communicate()[1]
    assert rerun.returncode == 0, err
    assert_fully_consistent(root, [A, big])


def test_cli_set_reads_values_from_a_file_and_writes_dest(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    values = tmp_path / 'values'
    values.write_text('SECRET=from-file\n')
    dest = tmp_path / '.env'
    proc = cli(['env', 'set', '--project', 'worb', '--root', str(root), '--values-file',
                str(values), '--dest', str(dest), '--metrics-dir', ''])
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result['keys_changed'] == ['SECRET'] and result['restored']['changed']
    assert b'SECRET=from-file # rotated\n' in dest.read_bytes()
    assert b'from-file' not in out


def test_cli_unknown_version_exits_nonzero_with_the_list(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    proc = cli(['env', 'restore', '--project', 'worb', '--root', str(root), '--version',
                'yesterday', '--dest', str(tmp_path / '.env'), '--metrics-dir', ''])
    out, err = proc.communicate()
    assert proc.returncode == 1
    assert json.loads(out)['param'] == 'version'
    assert 'available: master, current, ' in json.loads(out)['msg']
    assert err == b'', 'one result: the JSON on stdout'
    assert not (tmp_path / '.env').exists()


def test_cli_backup_from_stdin_check_and_list(tmp_path):
    root = tmp_path / 'store'
    args = ['env', 'backup', '--project', 'worb', '--root', str(root), '--src', '-',
            '--metrics-dir', '']
    proc = cli(args + ['--check'])
    out, err = proc.communicate(A)
    assert proc.returncode == 0, err
    assert json.loads(out)['created'] is True and not root.exists()
    proc = cli(args)
    out, err = proc.communicate(A)
    assert proc.returncode == 0, err
    assert json.loads(out)['trigger'] == 'daily'
    proc = cli(['env', 'list', '--project', 'worb', '--root', str(root), '--verify'])
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    listing = json.loads(out)
    assert listing['count'] == 1 and listing['versions'][0]['sha256'] == sha(A)
    assert b'alpha' not in out and b'pw@db' not in out


# ---- set and restore save a hand-edited live file first (CLI and core alike) ----

LIVE = b'# app\nexport DB_URL="postgres://u:pw@db/worb"\nSECRET=hand-edited # rotated\nHOT=1\n'


def run_cli(args, stdin=None):
    proc = cli(args)
    out, err = proc.communicate(stdin)
    return proc.returncode, out, err


def test_cli_restore_saves_a_live_edit_first(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    backup(root, B)
    dest = tmp_path / '.env'
    dest.write_bytes(LIVE)  # edited by hand since the last backup
    rc, out, err = run_cli(['env', 'restore', '--project', 'worb', '--root', str(root),
                            '--version', 'master', '--dest', str(dest), '--metrics-dir', ''])
    assert rc == 0, err
    result = json.loads(out)
    assert read(str(dest)) == A
    versions = log_versions(root)
    assert [v['sha256'] for v in versions] == [sha(A), sha(B), sha(LIVE)]
    assert result['live_saved'] is True and result['live_version'] == versions[-1]['version']
    assert versions[-1]['trigger'] == 'manual' and versions[-1]['source'] == str(dest)
    assert b'hand-edited' not in out + err
    # the saved edit can be restored, and a repeated restore changes nothing
    rc, out, _err = run_cli(['env', 'restore', '--project', 'worb', '--root', str(root),
                             '--version', versions[-1]['version'], '--dest', str(dest),
                             '--metrics-dir', ''])
    assert rc == 0 and read(str(dest)) == LIVE
    rc, out, _err = run_cli(['env', 'restore', '--project', 'worb', '--root', str(root),
                             '--version', versions[-1]['version'], '--dest', str(dest),
                             '--metrics-dir', ''])
    assert rc == 0 and json.loads(out)['changed'] is False
    assert len(log_versions(root)) == 3


def test_cli_set_saves_a_live_edit_first_and_keeps_it_in_the_file(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    dest = tmp_path / '.env'
    dest.write_bytes(LIVE)
    values = tmp_path / 'values'
    values.write_text('SECRET=from-file\n')
    rc, out, err = run_cli(['env', 'set', '--project', 'worb', '--root', str(root),
                            '--values-file', str(values), '--dest', str(dest),
                            '--metrics-dir', ''])
    assert rc == 0, err
    result = json.loads(out)
    expected = LIVE.replace(b'SECRET=hand-edited', b'SECRET=from-file')
    assert read(str(dest)) == expected  # the hand edit (HOT=1) survives in the app's file
    versions = log_versions(root)
    assert [v['sha256'] for v in versions] == [sha(A), sha(LIVE), sha(expected)]
    assert [v['trigger'] for v in versions] == ['manual', 'set', 'set']
    assert result['live_saved'] is True and result['keys_changed'] == ['SECRET']
    assert result['restored']['changed'] is True
    assert b'hand-edited' not in out and b'from-file' not in out
    rc, out, err = run_cli(['env', 'set', '--project', 'worb', '--root', str(root),
                            '--values-file', str(values), '--dest', str(dest),
                            '--metrics-dir', ''])
    assert rc == 0 and json.loads(out)['changed'] is False, err


def test_core_restore_saves_a_live_edit_and_check_mode_predicts_it(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    dest = tmp_path / '.env'
    dest.write_bytes(LIVE)
    before = snapshot_tree(str(tmp_path))
    predicted = env_store.restore(str(root), 'worb', version='master', dest=str(dest),
                                  check_mode=True, metrics_dir='')
    assert predicted['changed'] is True and predicted['live_saved'] is True
    assert snapshot_tree(str(tmp_path)) == before
    # live content already in a version (an older one) is not saved again
    done = env_store.restore(str(root), 'worb', version='master', dest=str(dest), metrics_dir='')
    assert done['live_saved'] is True and read(str(dest)) == A
    backup(root, C)
    again = env_store.restore(str(root), 'worb', version='current', dest=str(dest),
                              metrics_dir='')
    assert again['live_saved'] is False and read(str(dest)) == C
    assert [v['sha256'] for v in log_versions(root)] == [sha(A), sha(LIVE), sha(C)]


# ---- only evidence marks a version bad; host problems fail the run ----

def _fail_reading(monkeypatch, suffix, error=5):
    import builtins
    real_open = builtins.open

    def opening(file, mode='r', *args, **kwargs):
        if str(file).endswith(suffix) and 'r' in mode:
            raise OSError(error, os.strerror(error), str(file))
        return real_open(file, mode, *args, **kwargs)
    monkeypatch.setattr(builtins, 'open', opening)


def test_an_unreadable_version_is_a_host_problem_not_a_damaged_version(tmp_path, monkeypatch):
    from ansible_collections.codeb.backup.plugins.module_utils.errors import ArtifactError
    root = tmp_path / 'store'
    backup(root, A)
    backup(root, B)
    first = log_versions(root)[0]['file']
    dest = tmp_path / '.env'
    _fail_reading(monkeypatch, first)  # EIO on a version whose sha256 is fine
    with pytest.raises(BackupError) as info:
        env_store.restore(str(root), 'worb', version=first, dest=str(dest), metrics_dir='')
    assert not isinstance(info.value, ArtifactError)
    assert 'EIO' in info.value.msg and 'does not match' not in info.value.msg
    assert not dest.exists()
    with pytest.raises(BackupError) as info:
        env_store.listing(str(root), 'worb', verify=True)
    assert not isinstance(info.value, ArtifactError) and 'EIO' in info.value.msg
    monkeypatch.undo()
    assert env_store.listing(str(root), 'worb', verify=True)['problems'] == []


def test_an_unreadable_unlisted_version_file_is_kept_and_the_run_fails(tmp_path, monkeypatch):
    root = tmp_path / 'store'
    backup(root, A)
    orphan = os.path.join(store_dir(root), '2999-01-01T00:00:00.env')
    with open(orphan, 'wb') as handle:
        handle.write(B)
    before = snapshot_tree(str(root))
    _fail_reading(monkeypatch, '2999-01-01T00:00:00.env')
    with pytest.raises(BackupError) as info:
        backup(root, C)
    assert 'EIO' in info.value.msg
    monkeypatch.undo()
    assert read(orphan) == B
    after = snapshot_tree(str(root))
    after.pop('worb/production/.env-backup.lock'), before.pop('worb/production/.env-backup.lock')
    assert after == before


# ---- the next run reconciles what killed or failed runs left ----

def test_recover_adopts_a_whole_unlisted_version_and_removes_what_cannot_be_one(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    backup(root, B)
    directory = store_dir(root)
    stamps = [v['version'] for v in log_versions(root)]
    later = os.path.join(directory, '2999-01-01T00:00:00.env')
    with open(later, 'wb') as handle:
        handle.write(C)  # a run stopped between the version's rename and the log commit
    older = os.path.join(directory, '2000-01-01T00:00:00.env')
    with open(older, 'wb') as handle:
        handle.write(b'OLD=1\n')
    outside = tmp_path / 'outside.env'
    outside.write_bytes(b'KEEP=1\n')
    os.symlink(str(outside), os.path.join(directory, '2999-01-02T00:00:00.env'))
    os.mkdir(os.path.join(directory, '.tmp-dir.x'))
    with open(os.path.join(directory, '.tmp-backup-log.json.abc'), 'wb') as handle:
        handle.write(b'{')
    result = backup(root, C)
    assert result['created'] is False  # C was adopted, so it is already the current version
    versions = log_versions(root)
    assert [v['version'] for v in versions] == stamps + ['2999-01-01T00:00:00']
    assert versions[-1]['sha256'] == sha(C) and versions[-1]['recovered'] is True
    assert versions[-1]['keys_removed'] == ['DB_URL', 'NEW']
    assert_fully_consistent(root, [A, B, C])
    assert outside.read_bytes() == b'KEEP=1\n'
    text = ' '.join(result['repaired'])
    for fragment in ('adopted 2999-01-01T00:00:00.env', 'removed unlisted version file '
                     '2000-01-01T00:00:00.env', '2999-01-02T00:00:00.env', '.tmp-dir.x',
                     '.tmp-backup-log.json.abc'):
        assert fragment in text, (fragment, text)


def test_every_writing_entry_point_reconciles_under_the_lock(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    directory = store_dir(root)
    dest = tmp_path / 'app' / '.env'
    dest.parent.mkdir()
    values = tmp_path / 'values'
    values.write_text('SECRET=x\n')
    calls = {
        'backup': lambda: env_store.backup(str(root), 'worb', content=B.decode(), metrics_dir=''),
        'set': lambda: env_store.set_values(str(root), 'worb', values={'SECRET': 'y'},
                                            dest=str(dest), metrics_dir=''),
        'restore': lambda: env_store.restore(str(root), 'worb', version='master',
                                             dest=str(dest), metrics_dir=''),
    }
    for name, call in calls.items():
        stale = os.path.join(directory, '.tmp-current.env.%s' % name)
        with open(stale, 'wb') as handle:
            handle.write(b'partial')
        os.chmod(os.path.join(directory, 'current.env'), 0o600)
        with open(os.path.join(directory, 'current.env'), 'wb') as handle:
            handle.write(b'STALE=1\n')  # as if a run died before its current.env rename
        beside = dest.parent / ('.tmp-.env.%s' % name)
        beside.write_bytes(b'partial')
        result = call()
        assert not os.path.exists(stale), name
        assert beside.exists() is (name == 'backup'), name  # backup has no dest
        beside.unlink(missing_ok=True)
        assert any('.tmp-current.env.%s' % name in r for r in result['repaired']), name
        assert any('rewrote current.env' in r for r in result['repaired']), name
        versions = log_versions(root)
        assert read(os.path.join(directory, 'current.env')) == read(
            os.path.join(directory, versions[-1]['file'])), name


# ---- any failure records status 0; a failing metrics write hides nothing ----

def test_any_failure_type_records_status_0_and_keeps_the_success_time(tmp_path, monkeypatch):
    import errno
    from ansible_collections.codeb.backup.plugins.module_utils import durable
    root = tmp_path / 'store'
    metrics = tmp_path / 'metrics'
    backup(root, A, metrics_dir=str(metrics))
    prom = metrics / 'codeb_backup_env_worb_production.prom'
    success = [line for line in prom.read_text().splitlines()
               if line.startswith('codeb_backup_last_success_timestamp_seconds')]
    real = durable.atomic_write_json

    def full(path, obj, *args, **kwargs):
        if path.endswith('backup-log.json'):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return real(path, obj, *args, **kwargs)
    monkeypatch.setattr(durable, 'atomic_write_json', full)
    with pytest.raises(BackupError) as info:
        backup(root, B, metrics_dir=str(metrics))
    assert 'filesystem is full' in info.value.msg
    text = prom.read_text()
    assert 'codeb_backup_last_status{kind="env",target="worb/production"} 0' in text
    assert [line for line in text.splitlines() if line.startswith(
        'codeb_backup_last_success_timestamp_seconds')] == success
    # nothing half-written: the version file of the failed commit is gone again
    monkeypatch.undo()
    assert_fully_consistent(root, [A])


def test_a_failing_metrics_write_never_hides_the_jobs_own_error(tmp_path):
    root = tmp_path / 'store'
    backup(root, A)
    not_a_dir = tmp_path / 'metrics-file'
    not_a_dir.write_text('x')
    with pytest.raises(BackupError) as info:
        env_store.backup(str(root), 'worb', src=str(tmp_path / 'gone.env'),
                         metrics_dir=str(not_a_dir))
    assert info.value.param == 'src' and 'cannot read src' in info.value.msg
    assert info.value.details.get('metrics_error')


# ---- names read from backup-log.json are validated before any use ----

HOSTILE = [
    ('traversal', dict(file='../canary.env')),
    ('deep traversal', dict(file='../../../canary.env')),
    ('absolute', dict(file='/tmp/canary.env')),
    ('hidden', dict(file='.canary.env')),
    ('not a version name', dict(file='canary.env')),
    ('file of another version', dict(version='2026-01-01T00:00:01')),
    ('sha256 a number', dict(sha256=5)),
    ('size text', dict(size_bytes='12')),
    ('keys a string', dict(keys_added='ABC')),
    ('entry a string', None),
]


@pytest.mark.parametrize('case,change', HOSTILE, ids=[c for c, _change in HOSTILE])
def test_hostile_log_entries_are_refused_and_nothing_outside_is_touched(tmp_path, case, change):
    root = tmp_path / 'store'
    backup(root, A)
    canary = root / 'worb' / 'canary.env'  # production/../canary.env, outside the store
    canary.write_bytes(b'CANARY=outside\n')
    (tmp_path / 'canary.env').write_bytes(b'CANARY=outside\n')
    log_path = os.path.join(store_dir(root), 'backup-log.json')
    log = json.loads(read(log_path))
    entry = dict(log['versions'][0], version='2026-01-01T00:00:00',
                 file='2026-01-01T00:00:00.env', sha256=sha(canary.read_bytes()))
    log['versions'] = [entry if change is None else dict(entry, **change)]
    if change is None:
        log['versions'] = ['2026-01-01T00:00:00.env']
    with open(log_path, 'w') as handle:
        json.dump(log, handle)
    dest = tmp_path / 'app.env'
    dest.write_bytes(b'LIVE=1\n')
    before = snapshot_tree(str(tmp_path))
    calls = [
        lambda: env_store.restore(str(root), 'worb', version='2026-01-01T00:00:00',
                                  dest=str(dest), metrics_dir=''),
        lambda: env_store.restore(str(root), 'worb', version='master', dest=str(dest),
                                  metrics_dir=''),
        lambda: backup(root, B),
        lambda: env_store.set_values(str(root), 'worb', values={'X': '1'}, dest=str(dest),
                                     metrics_dir=''),
        lambda: env_store.listing(str(root), 'worb', verify=True),
    ]
    for call in calls:
        with pytest.raises(BackupError) as info:
            call()
        assert 'backup-log.json, version entry 1' in info.value.msg, info.value.msg
        assert 'nothing was changed' in info.value.msg
        assert 'outside' not in info.value.msg
    after = snapshot_tree(str(tmp_path))
    for tree in (before, after):
        tree.pop('store/worb/production/.env-backup.lock', None)
    assert after == before


def test_a_directory_mode_put_back_is_a_change(tmp_path):
    """``changed`` is true exactly when something was written: giving the store directory
    back its 0700 is a write even when the .env itself is unchanged."""
    root = tmp_path / 'store'
    backup(root, A)
    assert backup(root, A)['changed'] is False
    os.chmod(store_dir(root), 0o755)
    again = backup(root, A)
    assert again['changed'] is True and again['created'] is False
    assert again['repaired'] == ['set mode 0700 on %s' % store_dir(root)]
    assert stat.S_IMODE(os.stat(store_dir(root)).st_mode) == 0o700
    assert backup(root, A)['changed'] is False


def test_cli_flags_come_from_the_module_options():
    """One definition: every store option of env_backup is a flag of each env command,
    with the module's default."""
    from ansible_collections.codeb.backup.plugins.module_utils.cli import build_parser
    from ansible_collections.codeb.backup.plugins.module_utils.env import options
    args = build_parser().parse_args(['env', 'restore', '--project', 'worb', '--dest', '/x'])
    for option in options.STORE[1:] + options.WRITING + (options.MODE, options.VERSION):
        assert getattr(args, option.name) == option.default, option.name
    args = build_parser().parse_args(['env', 'backup', '--project', 'worb', '--src', '/x'])
    assert args.trigger == 'daily'   # what cron runs; the module's own default is "manual"


def test_environments_lists_the_stores_of_a_project_read_only(tmp_path):
    from ansible_collections.codeb.backup.plugins.module_utils.env import store
    assert store.environments(str(tmp_path), 'worb') == []
    backup(tmp_path, A, environment='staging')
    backup(tmp_path, A, environment='production')
    backup(tmp_path, A, project='other', environment='dev')
    (tmp_path / 'worb' / '.hidden').mkdir()
    (tmp_path / 'worb' / 'notes.txt').write_text('not a store')
    os.symlink(str(tmp_path / 'other' / 'dev'), str(tmp_path / 'worb' / 'linked'))
    before = sorted(os.listdir(tmp_path / 'worb'))
    assert store.environments(str(tmp_path), 'worb') == ['production', 'staging']
    assert sorted(os.listdir(tmp_path / 'worb')) == before
    with pytest.raises(BackupError) as caught:
        store.environments(str(tmp_path), '../worb')
    assert caught.value.param == 'project'
