# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The blue-green traffic switch: which nginx upstream serves a project.

nginx has two upstreams per project, ``codeb_<project>_blue`` and ``codeb_<project>_green``
(templated by the ``bluegreen`` role), and the project's server block includes one small
file, ``<include_dir>/<project>-active.conf``, holding ``proxy_pass`` to the active one.

A switch writes the new include under a temporary name, fsyncs it and renames it over the
old one (atomic: nginx never sees half a file), then runs ``nginx -t`` with the real
configuration. If the test fails, the previous include is put back the same way and nothing
is reloaded, so traffic stays where it was. If it passes, nginx is reloaded and the switch
waits until the master has started workers with the new configuration and told the old ones
to finish: when it returns, new connections go to the new slot.

The include is written *before* ``nginx -t`` and the reload, so on its own it says what
nginx will serve after its next reload, not what it serves now: a switch killed between
the rename and the reload leaves an include nginx never loaded. So only after nginx has
reloaded successfully does a switch record what it applied: ``<state_dir>/<project>.applied.json``
holds the slot and the sha256 (and text) of the include nginx was reloaded with. A switch
decides "nothing to do" only when the include and that record agree; if they disagree, or
there is no record, it tests and reloads again. ``traffic-status`` reports the recorded
slot, and says so when the include is ahead of it. If the record cannot be written after a
reload, the previous include is put back and nginx reloaded again, so the record stays true.

The active slot is read from the include's content and the applied record, never from file
times.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable, metrics, process
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError, as_backup_error
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.locking import DEFAULT_WAIT, job_lock
from ansible_collections.codeb.backup.plugins.module_utils.naming import validate_name

DEFAULT_INCLUDE_DIR = '/etc/nginx/codeb-bluegreen'
DEFAULT_NGINX_BINARY = '/usr/sbin/nginx'
DEFAULT_NGINX_CONF = '/etc/nginx/nginx.conf'
DEFAULT_PID_FILE = '/run/nginx.pid'
DEFAULT_RELOAD_TIMEOUT = 10.0
DEFAULT_STATE_DIR = '/var/lib/codeb-backup/traffic'
SLOTS = ('blue', 'green')
METRICS_KIND = 'traffic_switch'
_MARKER_RE = re.compile(r'^# codeb-active-slot: (\S+)\s*$', re.M)
_PROXY_RE = re.compile(r'^\s*proxy_pass\s+http://codeb_(\S+)_(blue|green);\s*$', re.M)


def upstream_name(project, slot):
    return 'codeb_%s_%s' % (project, slot)


def include_path(include_dir, project):
    validate_name('project', project)
    return os.path.join(include_dir, '%s-active.conf' % project)


def applied_path(state_dir, project):
    validate_name('project', project)
    return os.path.join(state_dir, '%s.applied.json' % project)


def read_applied(state_dir, project):
    """The record of the last switch nginx applied (dict with ``slot``, ``sha256``,
    ``include``), or None if there is none. A damaged record is no evidence either: None
    (the next switch then tests and reloads again)."""
    path = applied_path(state_dir, project)
    try:
        with open(path, 'rb') as handle:
            data = json.loads(handle.read().decode('utf-8'))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get('slot') not in SLOTS \
            or not isinstance(data.get('sha256'), str) or not isinstance(data.get('include'), str) \
            or durable.sha256_bytes(data['include'].encode()) != data['sha256']:
        return None
    return data


def _write_applied(state_dir, project, slot, include_bytes, master):
    durable.ensure_dir(state_dir, mode=0o755)
    record = os.path.basename(applied_path(state_dir, project))
    durable.remove_stale_temps(state_dir, durable.temps_of(record))
    durable.atomic_write_json(applied_path(state_dir, project), {
        'project': project, 'slot': slot, 'sha256': durable.sha256_bytes(include_bytes),
        'include': include_bytes.decode(), 'nginx_master_pid': master,
        'appliedAt': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'),
    }, mode=0o644)


def _read_bytes(path):
    try:
        with open(path, 'rb') as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def status(include_dir, project, state_dir=DEFAULT_STATE_DIR):
    """What nginx serves for ``project``, as far as a completed switch recorded it.

    ``slot`` is the slot of the last switch nginx applied (None when no switch was ever
    recorded); ``include_slot`` what the include says (what nginx loads on its next reload);
    ``in_sync`` whether the two are the same file.
    """
    path = include_path(include_dir, project)
    include_slot = read_active(include_dir, project)
    include_bytes = _read_bytes(path)
    applied = read_applied(state_dir, project)
    in_sync = bool(applied and include_bytes is not None
                   and applied['sha256'] == durable.sha256_bytes(include_bytes)
                   and applied['slot'] == include_slot)
    served = applied['slot'] if applied else None
    if in_sync:
        msg = 'nginx serves slot %s of project %s' % (served, project)
    elif applied:
        msg = ('nginx serves slot %s of project %s (the last switch it applied), but the '
               'include says %s: a switch was interrupted before nginx reloaded. Finish or undo '
               'it: codeb-backup traffic-switch --project %s --slot %s|%s'
               % (served, project, include_slot or 'nothing', project,
                  include_slot or served, served))
    elif include_slot:
        msg = ('no completed switch of project %s is recorded in %s: nginx serves slot %s only '
               'if it has reloaded since the include was written. Confirm with codeb-backup '
               'traffic-switch --project %s --slot %s' % (project, state_dir, include_slot,
                                                          project, include_slot))
    else:
        msg = 'project %s has no active include yet' % project
    return {'project': project, 'slot': served, 'include_slot': include_slot,
            'in_sync': in_sync, 'include': path, 'applied': applied_path(state_dir, project),
            'msg': msg}


def query(include_dir, project, state_dir=DEFAULT_STATE_DIR):
    """``status`` as a module result (``changed=False``: it reads only)."""
    started = time.monotonic()
    now = status(include_dir, project, state_dir)
    active, path = now['slot'], now['include']
    result = dict(now, changed=False, previous_slot=active,
                  duration_seconds=round(time.monotonic() - started, 4),
                  size_bytes=os.path.getsize(path) if os.path.exists(path) else 0, diff=None)
    if active:
        result['upstream'] = upstream_name(project, active)
    return result


def render_include(project, slot):
    return ('# Managed by codeb.backup: the active blue-green slot of project %s.\n'
            '# Do not edit by hand; switch with the traffic_switch module, deploy.yml,\n'
            '# rollback.yml or "codeb-backup traffic-switch".\n'
            '# codeb-active-slot: %s\n'
            'proxy_pass http://%s;\n' % (project, slot, upstream_name(project, slot)))


def _validate(project, slot):
    validate_name('project', project)
    if slot not in SLOTS:
        raise BackupError('slot must be blue or green; got %r' % (slot,), param='slot')


def read_active(include_dir, project):
    """The slot the include points at, or None if there is no include yet."""
    path = include_path(include_dir, project)
    try:
        with open(path) as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    marker = _MARKER_RE.search(text)
    proxy = _PROXY_RE.search(text)
    if not marker or not proxy or marker.group(1) != proxy.group(2) or proxy.group(1) != project:
        raise BackupError(
            'the active include %s was not written by codeb.backup (or was edited by hand); '
            'it was not changed. Expected a "# codeb-active-slot:" line and "proxy_pass '
            'http://%s;". Fix or remove it, then switch again.'
            % (path, upstream_name(project, 'blue|green')), param='include_dir')
    return marker.group(1)


def nginx_argv(nginx_binary=DEFAULT_NGINX_BINARY, nginx_conf=DEFAULT_NGINX_CONF,
               nginx_prefix=None):
    argv = [nginx_binary]
    if nginx_prefix:
        argv += ['-p', nginx_prefix]
    return argv + ['-c', nginx_conf]


def nginx_test(nginx):
    """Run ``nginx -t``; return ``(ok, output)``."""
    proc = process.run(nginx + ['-t'], what='nginx -t', check=False)
    return proc.returncode == 0, (proc.stderr or proc.stdout or '').strip()


def _children(pid):
    """``{child_pid: process title}`` of ``pid`` (Linux /proc)."""
    found = {}
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % name) as handle:
                stat = handle.read()
            ppid = int(stat[stat.rindex(')') + 2:].split()[1])
            if ppid != pid:
                continue
            with open('/proc/%s/cmdline' % name, 'rb') as handle:
                found[int(name)] = handle.read().replace(b'\0', b' ').decode(errors='replace')
        except (OSError, ValueError, IndexError):
            continue
    return found


def _master_pid(pid_file):
    try:
        with open(pid_file) as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        raise BackupError('nginx is not running: no live master process in pid file %s. Start '
                          'nginx (or set pid_file to where its pid file is), then switch again.'
                          % pid_file, param='pid_file')


def reload(nginx, pid_file, timeout=DEFAULT_RELOAD_TIMEOUT):
    """Reload nginx and wait until its master runs workers with the new configuration and
    every old worker is gone or shutting down (so it accepts no new connections)."""
    master = _master_pid(pid_file)
    old = _children(master)
    process.run(nginx + ['-s', 'reload'], what='nginx -s reload')
    deadline = time.monotonic() + timeout
    while True:
        now = _children(master)
        fresh = [pid for pid in now if pid not in old]
        lingering = [pid for pid, title in now.items()
                     if pid in old and 'worker process' in title and 'shutting down' not in title]
        if fresh and not lingering:
            return
        if time.monotonic() >= deadline:
            raise BackupError(
                'nginx (master pid %d) did not start workers with the new configuration within '
                '%.0f s of the reload; check its error log.' % (master, timeout),
                param='reload_timeout')
        time.sleep(0.02)


def switch(project, slot, include_dir=DEFAULT_INCLUDE_DIR, nginx_binary=DEFAULT_NGINX_BINARY,
           nginx_conf=DEFAULT_NGINX_CONF, nginx_prefix=None, pid_file=DEFAULT_PID_FILE,
           check_mode=False, lock_timeout=DEFAULT_WAIT, reload_timeout=DEFAULT_RELOAD_TIMEOUT,
           state_dir=DEFAULT_STATE_DIR, metrics_dir=metrics.DEFAULT_TEXTFILE_DIR):
    """Point project's traffic at ``slot``. Returns a result dict; the outcome is written
    as ``kind="traffic_switch"`` metrics (not in check mode).

    Nothing to do only when the include points at ``slot`` *and* the applied record says
    nginx was reloaded with exactly that include; otherwise the include is (re)written,
    tested and nginx reloaded. In check mode nothing is written: it reports whether the
    switch would change anything and runs ``nginx -t`` on the current configuration,
    failing if nginx would refuse it.
    """
    _validate(project, slot)
    started = time.monotonic()
    path = include_path(include_dir, project)
    nginx = nginx_argv(nginx_binary, nginx_conf, nginx_prefix)
    if not os.path.isdir(include_dir):
        raise BackupError('include_dir %s does not exist; apply the codeb.backup.bluegreen role '
                          'first.' % include_dir, param='include_dir')
    if check_mode:
        now = status(include_dir, project, state_dir)
        changed = not (now['include_slot'] == slot and now['in_sync'])
        previous = now['slot'] if now['slot'] else now['include_slot']
        if changed:
            ok, output = nginx_test(nginx)
            if not ok:
                raise BackupError('nginx -t fails on the current configuration, so a switch of '
                                  'project %s to %s would be refused: %s' % (project, slot, output),
                                  param='nginx_conf')
        return _result(project, slot, previous, path, changed, started)
    with Job(METRICS_KIND, project, metrics_dir,
             what='traffic switch of project %s to slot %s' % (project, slot)), \
            job_lock(os.path.join(include_dir, '.%s-switch.lock' % project),
                     'traffic switch of project %s' % project, wait=lock_timeout):
        removed = durable.remove_stale_temps(include_dir, durable.temps_of(os.path.basename(path)))
        now = status(include_dir, project, state_dir)
        if now['include_slot'] == slot and now['in_sync']:
            # nothing to switch; removing a killed switch's temporary is still a change
            return _result(project, slot, slot, path, bool(removed), started)
        applied = read_applied(state_dir, project)
        # what nginx is known to serve: put back on failure (a pending include it never
        # loaded must not stay behind for the next reload to pick up)
        previous = now['slot'] if applied else now['include_slot']
        back_bytes = applied['include'].encode() if applied else _read_bytes(path)
        new_bytes = render_include(project, slot).encode()
        if _read_bytes(path) != new_bytes:
            durable.atomic_write_bytes(path, new_bytes, mode=0o644)
        ok, output = nginx_test(nginx)
        if not ok:
            _put_back(path, back_bytes)
            raise BackupError(
                'nginx -t failed with project %s switched to slot %s, so nothing was reloaded '
                'and the previous include was put back: traffic stays on %s. Fix the nginx '
                'configuration, then switch again. nginx said: %s'
                % (project, slot, previous or 'nothing (no include existed)', output),
                param='nginx_conf', nginx_output=output)
        try:
            reload(nginx, pid_file, reload_timeout)
        except BackupError as exc:
            _put_back(path, back_bytes)
            raise BackupError('%s The previous include (slot %s) was put back.'
                              % (exc.msg, previous), param=exc.param)
        try:
            _write_applied(state_dir, project, slot, new_bytes, _master_pid(pid_file))
        except Exception as exc:  # nginx serves the new slot, but nothing can say so
            error = as_backup_error(exc, 'recording the applied switch in %s' % state_dir,
                                    param='state_dir')
            _undo_unrecorded(project, slot, previous, path, back_bytes, nginx, pid_file,
                             reload_timeout, error)
    return _result(project, slot, previous, path, True, started)


def _undo_unrecorded(project, slot, previous, path, back_bytes, nginx, pid_file, timeout, error):
    """The reload worked but its record could not be written: switch nginx back, so the
    record (still the previous one) stays true, and fail."""
    if back_bytes is None:  # nothing to switch back to: say what nginx serves now
        raise BackupError(
            'nginx now serves slot %s of project %s, but the switch could not be recorded: %s. '
            'Fix the cause, then run the switch again so traffic-status can tell.'
            % (slot, project, error.msg), param=error.param or 'state_dir', **error.details)
    try:
        _put_back(path, back_bytes)
        reload(nginx, pid_file, timeout)
    except Exception as exc:
        raise BackupError(
            'DANGER: nginx was switched to slot %s of project %s, but %s, and switching it back '
            'to %s failed too (%s). nginx may serve either slot; fix the cause and run the '
            'switch again.' % (slot, project, error.msg, previous,
                               as_backup_error(exc, 'switching back').msg),
            param=error.param or 'state_dir')
    raise BackupError(
        'the switch of project %s to slot %s could not be recorded: %s. nginx was switched '
        'back, so traffic stays on %s. Fix the cause, then switch again.'
        % (project, slot, error.msg, previous or 'nothing (no include existed)'),
        param=error.param or 'state_dir', **error.details)


def _put_back(path, previous_bytes):
    if previous_bytes is None:
        durable.discard(path)
        durable.fsync_dir(os.path.dirname(path))
    else:
        durable.atomic_write_bytes(path, previous_bytes, mode=0o644)


def ensure_include(project, slot, include_dir=DEFAULT_INCLUDE_DIR, check_mode=False):
    """Create the project's include pointing at ``slot`` only if none exists (a role's
    first run); an existing include is never switched here. Nothing is reloaded."""
    _validate(project, slot)
    started = time.monotonic()
    path = include_path(include_dir, project)
    previous = read_active(include_dir, project) if os.path.isdir(include_dir) else None
    if previous is not None:
        return _result(project, previous, previous, path, False, started)
    if not check_mode:
        durable.ensure_dir(include_dir, mode=0o755)
        durable.atomic_write_bytes(path, render_include(project, slot).encode(), mode=0o644)
    return _result(project, slot, None, path, True, started)


def _result(project, slot, previous, path, changed, started):
    return {
        'changed': changed,
        'project': project,
        'slot': slot,
        'previous_slot': previous,
        'include': path,
        'upstream': upstream_name(project, slot),
        'diff': {'before': 'active slot: %s\n' % (previous or 'none'),
                 'after': 'active slot: %s\n' % slot,
                 'before_header': path, 'after_header': path},
        'duration_seconds': round(time.monotonic() - started, 4),
        'size_bytes': os.path.getsize(path) if os.path.exists(path) else 0,
    }
