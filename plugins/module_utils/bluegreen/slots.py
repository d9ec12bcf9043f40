# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Blue-green slot state: one JSON file per project.

::

    {
      "projectName": "worb", "teamId": "default", "activeSlot": "blue",
      "blue":  {"name": "blue", "state": "active", "version": "v1.2.3",
                "deployedBy": "key_abc123", "dbSnapshot": "worb-2026-01-07T10:00:00.dump",
                "redisSnapshot": "...", "envBackup": "2026-01-07T10:00:00.env",
                "deployedAt": "2026-01-07T10:00:00Z"},
      "green": {"name": "green", "state": "grace", "version": "v1.2.2", ...},
      "lastUpdated": "2026-01-07T10:00:00Z",
      "generation": 7,
      "history": [{"time": ..., "action": "deployed" | "rolled_back", "slot": ..., ...}]
    }

Slot ``state`` is one of ``active`` (serving traffic), ``grace`` (the previous release,
kept ready for a rollback), ``rolled_back`` (a release traffic was rolled back from; it can
be rolled forward to again) and ``empty`` (never deployed). A slot traffic was rolled back
from also has ``rolledBackAt`` and ``rolledBackBy`` (``deployedBy`` stays who deployed it;
records written before ``rolledBackBy`` existed name the rollback's actor only in the
history's ``by``).

Which slot is current is read only from ``activeSlot`` in the file, never from file times.
Every change is made under the project's lock and written atomically (temp name, fsync,
rename, directory fsync); the temporaries a killed write left behind are removed by the next
write, under the same lock. ``generation`` grows by one with each change, so a caller
that planned against one generation can refuse to record over another.
"""

from __future__ import annotations

import copy
import datetime
import json
import os
import time

from ansible_collections.codeb.backup.plugins.module_utils import durable, metrics
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.job import Job
from ansible_collections.codeb.backup.plugins.module_utils.locking import DEFAULT_WAIT, job_lock
from ansible_collections.codeb.backup.plugins.module_utils.naming import validate_name, validate_ref

DEFAULT_STATE_DIR = '/var/lib/codeb-backup/slots'
SLOTS = ('blue', 'green')
SLOT_STATES = ('active', 'grace', 'rolled_back', 'empty')
ROLLBACK_TARGET_STATES = ('grace', 'rolled_back')
HISTORY_SIZE = 20
SNAPSHOT_KEYS = {'db': 'dbSnapshot', 'redis': 'redisSnapshot', 'env': 'envBackup'}
# The slot_rollback options that make a rollback require a recorded snapshot (their
# former names restore_db, restore_redis and restore_env stay as aliases).
REQUIRE_PARAMS = {'db': 'require_db_snapshot', 'redis': 'require_redis_snapshot',
                  'env': 'require_env_backup'}
SNAPSHOT_PARAMS = {'db': 'db_snapshot', 'redis': 'redis_snapshot', 'env': 'env_backup'}
_WHAT = {'db': 'the database', 'redis': 'Redis', 'env': 'the ENV file'}
_FREE_TEXT_MAX = 128


def _now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def other_slot(slot):
    return 'green' if slot == 'blue' else 'blue'


def validate_slot(param, value):
    if value not in SLOTS:
        raise BackupError('%s must be one of %s; got %r' % (param, ', '.join(SLOTS), value),
                          param=param)
    return value


def validate_text(param, value):
    """A short free-text field (deployedBy, teamId): printable, at most 128 characters."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > _FREE_TEXT_MAX \
            or not value.isprintable():
        raise BackupError('%s must be printable text of 1 to %d characters; got %r'
                          % (param, _FREE_TEXT_MAX, value), param=param)
    return value


def state_path(state_dir, project):
    validate_name('project', project)
    return os.path.join(state_dir, '%s.json' % project)


def _lock_path(state_dir, project):
    return os.path.join(state_dir, '.%s.lock' % project)


def empty_state(project, team_id='default'):
    return {
        'projectName': project,
        'teamId': team_id or 'default',
        'activeSlot': None,
        'blue': {'name': 'blue', 'state': 'empty'},
        'green': {'name': 'green', 'state': 'empty'},
        'lastUpdated': None,
        'generation': 0,
        'history': [],
    }


def load(state_dir, project):
    """The project's state dict, or None when the project has no state file."""
    path = state_path(state_dir, project)
    try:
        with open(path, 'rb') as handle:
            data = json.loads(handle.read().decode('utf-8'))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise BackupError('slot state %s is not valid JSON (%s); it was not changed. Inspect it '
                          'or restore it from a backup.' % (path, exc), param='project')
    _check_layout(path, data, project)
    return data


def _check_layout(path, data, project):
    problem = None
    if not isinstance(data, dict):
        problem = 'it is not a JSON object'
    elif data.get('projectName') != project:
        problem = 'projectName is %r, not %r' % (data.get('projectName'), project)
    elif data.get('activeSlot') not in SLOTS + (None,):
        problem = 'activeSlot is %r' % (data.get('activeSlot'),)
    else:
        for slot in SLOTS:
            if not isinstance(data.get(slot), dict) or data[slot].get('state') not in SLOT_STATES:
                problem = 'slot %s is malformed' % slot
                break
    if problem:
        raise BackupError('slot state %s has an unknown layout (%s); it was not changed.'
                          % (path, problem), param='project')
    data.setdefault('history', [])
    data.setdefault('generation', 0)


def require_state(state_dir, project):
    state = load(state_dir, project)
    if state is None:
        raise BackupError(
            'unknown project %r: no slot state at %s. Check the project name, or deploy it '
            'first with playbooks/deploy.yml.' % (project, state_path(state_dir, project)),
            param='project')
    return state


def known_versions(state):
    """Every version the project has had in a slot, oldest first, without repeats."""
    seen = []
    for event in state.get('history', []):
        version = event.get('version')
        if version and version not in seen:
            seen.append(version)
    for slot in SLOTS:
        version = state[slot].get('version')
        if version and version not in seen:
            seen.append(version)
    return seen


def summary(state):
    """A flat, operator-friendly view for results and the CLI."""
    if state is None:
        return None
    active = state.get('activeSlot')
    return {
        'project': state['projectName'],
        'active_slot': active,
        'active_version': state[active].get('version') if active else None,
        'inactive_slot': other_slot(active) if active else 'blue',
        'inactive_version': state[other_slot(active)].get('version') if active else None,
        'generation': state.get('generation', 0),
    }


# --------------------------------------------------------------------------- deploy

def plan_deploy(state, project, version, deployed_by=None, db_snapshot=None, redis_snapshot=None,
                env_backup=None, slot=None, team_id=None, now=None):
    """Return ``(changed, new_state, target_slot)`` for recording ``version`` as deployed.

    The version goes into the inactive slot (blue for a project's first deploy), which
    becomes active; the previously active slot becomes ``grace``.

    The snapshots were taken just *before* the deploy: they hold the data the previously
    active release was running with, so they are recorded on that slot (the one becoming
    ``grace``). A rollback to it that restores the database then restores exactly the data
    it left behind, not the older data it was itself deployed over (restoring the target
    slot's deploy-time snapshot would lose everything written while it was live). On a
    project's first deploy there is no previous slot; the snapshot is kept in the history.

    ``slot``, when given, must be the inactive slot (deploy.yml passes the slot it deployed
    into, so a concurrent deploy cannot make us record the wrong one). Recording the same
    deploy again changes nothing.
    """
    validate_name('project', project)
    validate_ref('version', version)
    validate_text('deployed_by', deployed_by)
    validate_text('team_id', team_id)
    refs = {'dbSnapshot': db_snapshot, 'redisSnapshot': redis_snapshot, 'envBackup': env_backup}
    for key, param in (('dbSnapshot', 'db_snapshot'), ('redisSnapshot', 'redis_snapshot'),
                       ('envBackup', 'env_backup')):
        if refs[key] is not None:
            validate_ref(param, refs[key])
    if slot is not None:
        validate_slot('slot', slot)
    base = empty_state(project, team_id) if state is None else copy.deepcopy(state)
    active = base.get('activeSlot')
    last = base['history'][-1] if base.get('history') else {}
    if active and base[active].get('version') == version and slot in (None, active) \
            and last.get('action') == 'deployed' and last.get('slot') == active \
            and all(last.get(k) == v for k, v in refs.items()):
        return False, base, active
    target = other_slot(active) if active else 'blue'
    if slot is not None and slot != target:
        raise BackupError(
            'slot %s of project %s is the active slot (serving %s); a deploy goes into the '
            'inactive slot %s. Re-run the deploy so it targets %s.'
            % (slot, project, base[slot].get('version'), target, target), param='slot')
    stamp = _now_iso() if now is None else now
    entry = {'name': target, 'state': 'active', 'version': version, 'deployedAt': stamp}
    if deployed_by:
        entry['deployedBy'] = deployed_by
    if active:
        base[active]['state'] = 'grace'
        base[active].pop('rolledBackAt', None)
        base[active].pop('rolledBackBy', None)
        for key, value in refs.items():
            if value:
                base[active][key] = value
            else:
                base[active].pop(key, None)
    base[target] = entry
    base['activeSlot'] = target
    if team_id:
        base['teamId'] = team_id
    event = {'action': 'deployed', 'slot': target, 'version': version, 'fromSlot': active,
             'fromVersion': base[active].get('version') if active else None, 'by': deployed_by}
    event.update(refs)
    _finish(base, stamp, event)
    return True, base, target


# ------------------------------------------------------------------------- rollback

def plan_rollback(state, project, to_version=None, require=()):
    """Check a rollback is possible; return the plan dict (raises BackupError if not).

    Without ``to_version`` the target is the other slot; with it, the slot holding that
    version (which may be the active one: then nothing needs to change). ``require`` lists
    the snapshots the caller is about to restore (``db``, ``redis``, ``env``): the target
    slot must have each one recorded. Nothing is restored here.
    """
    validate_name('project', project)
    if to_version is not None:
        validate_ref('to_version', to_version)
    for kind in require:
        if kind not in SNAPSHOT_KEYS:
            raise BackupError('unknown snapshot kind %r; use db, redis or env' % (kind,),
                              param='require')
    if state is None:
        raise BackupError('unknown project %r: it has no slot state; nothing to roll back to.'
                          % project, param='project')
    active = state.get('activeSlot')
    if not active:
        raise BackupError('project %s has no active slot yet; deploy it first.' % project,
                          param='project')
    if to_version is None:
        target = other_slot(active)
        param = 'project'
    else:
        param = 'to_version'
        holders = [s for s in SLOTS if state[s].get('version') == to_version]
        if active in holders:
            target = active
        elif holders:
            target = holders[0]
        else:
            deployed = ', '.join('%s has %s' % (s, state[s].get('version') or 'nothing')
                                 for s in SLOTS)
            if to_version in known_versions(state):
                raise BackupError(
                    'to_version %s of project %s was deployed earlier but is no longer in a '
                    'slot (%s); only the two slots can be rolled back to. Deploy %s again '
                    'instead.' % (to_version, project, deployed, to_version), param=param)
            raise BackupError(
                'to_version %s is not in the history of project %s; known versions: %s (%s).'
                % (to_version, project, ', '.join(known_versions(state)) or 'none', deployed),
                param=param)
    slot = state[target]
    if not slot.get('version') or slot.get('state') == 'empty':
        raise BackupError(
            'the target slot %s of project %s is empty: nothing was ever deployed there, so '
            'there is nothing to roll back to. Traffic and state were not changed.'
            % (target, project), param=param)
    if target != active and slot.get('state') not in ROLLBACK_TARGET_STATES:
        raise BackupError('slot %s of project %s is in state %r; it cannot be rolled back to.'
                          % (target, project, slot.get('state')), param=param)
    missing = [kind for kind in require if not slot.get(SNAPSHOT_KEYS[kind])]
    if missing:
        kind = missing[0]
        raise BackupError(
            '%s was asked for (a restore of %s), but slot %s (%s) of project %s has no %s '
            'recorded; nothing to restore. Traffic and state were not changed. Roll back '
            'without restoring %s, or restore a snapshot by hand.'
            % (REQUIRE_PARAMS[kind], _WHAT[kind], target, slot['version'], project,
               SNAPSHOT_KEYS[kind], _WHAT[kind]),
            param=REQUIRE_PARAMS[kind])
    return {
        'project': project,
        'changed': target != active,
        'target_slot': target,
        'target_version': slot['version'],
        'from_slot': active,
        'from_version': state[active].get('version'),
        'db_snapshot': slot.get('dbSnapshot'),
        'redis_snapshot': slot.get('redisSnapshot'),
        'env_backup': slot.get('envBackup'),
        'generation': state.get('generation', 0),
    }


def apply_rollback(state, plan, rolled_back_by=None, safety_db_snapshot=None,
                   restored=(), now=None, safety_env_backup=None, safety_redis_snapshot=None):
    """Return ``(changed, new_state)`` with the plan's target slot active.

    The slot traffic left becomes ``rolled_back``. When a safety snapshot of the database
    was taken just before the restore, it becomes that slot's ``dbSnapshot``: it holds the
    data that release last ran with, so rolling forward with a database restore brings it
    back. ``rolled_back_by`` is recorded as the left slot's ``rolledBackBy`` (next to
    ``rolledBackAt``) and as the history event's ``by``.
    Safety copies of the ENV file and of Redis become its ``envBackup`` and
    ``redisSnapshot`` the same way.
    """
    validate_text('rolled_back_by', rolled_back_by)
    if safety_db_snapshot is not None:
        validate_ref('safety_db_snapshot', safety_db_snapshot)
    if safety_env_backup is not None:
        validate_ref('safety_env_backup', safety_env_backup)
    if safety_redis_snapshot is not None:
        validate_ref('safety_redis_snapshot', safety_redis_snapshot)
    new = copy.deepcopy(state)
    if not plan['changed']:
        return False, new
    if new.get('generation', 0) != plan['generation'] or new.get('activeSlot') != plan['from_slot']:
        raise BackupError(
            'the slot state of project %s changed while the rollback ran (active slot now %s); '
            'nothing was recorded. Check what else deployed, then run the rollback again.'
            % (plan['project'], new.get('activeSlot')), param='project')
    target, left = plan['target_slot'], plan['from_slot']
    stamp = _now_iso() if now is None else now
    new[target]['state'] = 'active'
    new[left]['state'] = 'rolled_back'
    new[left]['rolledBackAt'] = stamp
    if rolled_back_by:
        new[left]['rolledBackBy'] = rolled_back_by
    else:
        new[left].pop('rolledBackBy', None)
    if safety_db_snapshot:
        new[left]['dbSnapshot'] = safety_db_snapshot
    if safety_env_backup:
        new[left]['envBackup'] = safety_env_backup
    if safety_redis_snapshot:
        new[left]['redisSnapshot'] = safety_redis_snapshot
    new['activeSlot'] = target
    event = {'action': 'rolled_back', 'slot': target, 'version': plan['target_version'],
             'fromSlot': left, 'fromVersion': plan['from_version'], 'by': rolled_back_by,
             'restored': sorted(restored) or None, 'safetySnapshot': safety_db_snapshot,
             'safetyEnvBackup': safety_env_backup, 'safetyRedisSnapshot': safety_redis_snapshot}
    _finish(new, stamp, event)
    return True, new


def _finish(state, stamp, event):
    state['lastUpdated'] = stamp
    state['generation'] = int(state.get('generation', 0)) + 1
    event = dict((k, v) for k, v in event.items() if v is not None)
    event['time'] = stamp
    state['history'] = (state.get('history', []) + [event])[-HISTORY_SIZE:]


# ------------------------------------------------------------------ locked writers

def write(state_dir, state):
    """Write ``state`` atomically. Call under the project's lock: it also removes the
    temporaries of this project's state file that a killed write left (never another's)."""
    durable.ensure_dir(state_dir, mode=0o755)
    path = state_path(state_dir, state['projectName'])
    durable.remove_stale_temps(state_dir, durable.temps_of(os.path.basename(path)))
    durable.atomic_write_json(path, state, mode=0o644)


def record_deploy(state_dir, project, version, check_mode=False, lock_timeout=DEFAULT_WAIT, **kwargs):
    """Plan and (unless ``check_mode``) write a deploy. Returns a result dict."""
    validate_name('project', project)
    started = time.monotonic()
    # Plan once without the lock: validates every input (and refuses) before anything,
    # not even the state directory or lock file, is created.
    before = load(state_dir, project)
    changed, after, target = plan_deploy(before, project, version, **kwargs)
    if not check_mode:
        durable.ensure_dir(state_dir, mode=0o755)
        with job_lock(_lock_path(state_dir, project), 'slot state change of project %s' % project,
                      wait=lock_timeout):
            before = load(state_dir, project)
            changed, after, target = plan_deploy(before, project, version, **kwargs)
            if changed:
                write(state_dir, after)
    return _result(state_dir, project, changed, before, after, started, slot=target)


def record_rollback(state_dir, project, to_version=None, require=(), rolled_back_by=None,
                    safety_db_snapshot=None, expect_generation=None, check_mode=False,
                    lock_timeout=DEFAULT_WAIT, metrics_dir=metrics.DEFAULT_TEXTFILE_DIR,
                    safety_env_backup=None, safety_redis_snapshot=None):
    """Plan and (unless ``check_mode``) record a rollback. Returns a result dict with the
    plan under ``rollback``. ``expect_generation`` makes it refuse when the state changed
    since a preflight read it."""
    validate_name('project', project)
    started = time.monotonic()
    if check_mode:
        before = require_state(state_dir, project)
        plan = plan_rollback(before, project, to_version, require)
        changed, after = plan['changed'], before
    else:
        # Metrics are written once the project is known to exist: a refused rollback of a
        # real project is a failed attempt; a mistyped project name is not. Job records
        # status 0 for a failure of any kind (a full disk, a lock timeout, a refusal).
        before = require_state(state_dir, project)
        with Job('bluegreen_rollback', project, metrics_dir=metrics_dir,
                 what='recording the rollback of project %s' % project):
            with job_lock(_lock_path(state_dir, project), 'slot state change of project %s'
                          % project, wait=lock_timeout):
                before = require_state(state_dir, project)
                plan = plan_rollback(before, project, to_version, require)
                if expect_generation is not None and int(expect_generation) != plan['generation']:
                    raise BackupError(
                        'the slot state of project %s changed since the preflight (generation '
                        '%s, expected %s); nothing was recorded. Run the rollback again.'
                        % (project, plan['generation'], expect_generation),
                        param='expect_generation')
                changed, after = apply_rollback(before, plan, rolled_back_by, safety_db_snapshot,
                                                restored=require,
                                                safety_env_backup=safety_env_backup,
                                                safety_redis_snapshot=safety_redis_snapshot)
                if changed:
                    write(state_dir, after)
    result = _result(state_dir, project, changed, before, after, started,
                     slot=plan['target_slot'])
    result['rollback'] = plan
    return result


def query(state_dir, project):
    started = time.monotonic()
    state = load(state_dir, project)
    result = _result(state_dir, project, False, state, state, started,
                     slot=state.get('activeSlot') if state else None)
    result['exists'] = state is not None
    return result


def _result(state_dir, project, changed, before, after, started, slot=None):
    path = state_path(state_dir, project)
    size = os.path.getsize(path) if os.path.exists(path) else 0
    return {
        'changed': changed,
        'project': project,
        'state_file': path,
        'slot': slot,
        'slot_state': after,
        'summary': summary(after),
        'diff': {'before': _diffable(before), 'after': _diffable(after),
                 'before_header': path, 'after_header': path},
        'duration_seconds': round(time.monotonic() - started, 3),
        'size_bytes': size,
    }


def _diffable(state):
    if state is None:
        return ''
    return json.dumps(state, indent=2, sort_keys=True) + '\n'
