# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status API: ``POST /api/tool`` (``backup_status``, ``backup_list``) and ``GET /healthz``.

Runs on FastAPI 0.92 / pydantic 1.10 (Debian bookworm, what the backup host runs) and on
FastAPI >= 0.100 / pydantic 2. Authentication is decided by :class:`_Gate`, an ASGI layer
in front of the routes, before the body is read: a bad key is a 401 whatever the body
holds, failures are counted per client address (429 once there are too many), and every
request to the tool endpoint is logged as one JSON line, never with its key. The route
then authorises (403), finds the project (404) and asks the facts (503 when Prometheus
cannot answer). Every body has a pydantic model, so the OpenAPI schema is exact.
"""

import datetime
import json
import math
import sys
import threading
import time
from collections import deque
from typing import Dict, List, Literal, Optional, Union

try:
    import pydantic
    from fastapi import Body, FastAPI, HTTPException, Request, Security
    from fastapi.responses import JSONResponse
    from fastapi.security import APIKeyHeader
    from pydantic import BaseModel, Field
    HAS_FASTAPI = True
    PYDANTIC_V2 = pydantic.VERSION.startswith('2.')
except ImportError:
    HAS_FASTAPI = False
    PYDANTIC_V2 = False
    BaseModel = object

    def Field(*args, **kwargs):  # pylint: disable=unused-argument,invalid-name
        return None

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.naming import NAME_MAX, NAME_PATTERN
from ansible_collections.codeb.backup.plugins.module_utils.status.errors import FactsUnavailable
from ansible_collections.codeb.backup.plugins.module_utils.status.keys import KeyStore

TOOLS = ('backup_status', 'backup_list')
TOOL_PATH = '/api/tool'
UNAUTHORIZED = {'detail': 'invalid or missing API key'}
_SCOPE_KEY = 'codeb.status.request'


class ProjectNotFound(BackupError):
    """The request names a project the configuration does not list."""


class NotAllowed(BackupError):
    """The key is valid but its team or role does not give this answer."""


# ---------------------------------------------------------------- models

if PYDANTIC_V2:
    class _Model(BaseModel):
        model_config = pydantic.ConfigDict(extra='forbid')
else:
    class _Model(BaseModel):  # pylint: disable=too-few-public-methods
        class Config(object):  # pylint: disable=too-few-public-methods
            extra = 'forbid'


def _nullable(description):
    """A required field whose value may be null (pydantic 1 needs ``nullable`` spelt out
    for OpenAPI 3.0; pydantic 2 writes ``anyOf [..., null]`` itself)."""
    if PYDANTIC_V2:
        return Field(..., description=description)
    return Field(..., description=description, nullable=True)


def _name_field(description, default=None):
    """A name (naming.validate_name's rule) as a schema constraint; ``...``: required."""
    pattern = r'^%s$' % NAME_PATTERN
    if PYDANTIC_V2:
        return Field(default, description=description, pattern=pattern, max_length=NAME_MAX)
    extra = {'nullable': True} if default is None else {}
    return Field(default, description=description, regex=pattern, max_length=NAME_MAX, **extra)


_TIME = 'ISO 8601 UTC time (second precision, Z), or null when unknown'


class PostgresStatus(_Model):
    lastSnapshot: Optional[str] = _nullable('the oldest of the newest good pg_snapshot of each '
                                            'of the project\'s databases; ' + _TIME)
    walArchived: Optional[int] = _nullable('WAL segments the primary has archived')
    replicationLag: Optional[str] = _nullable('largest standby lag, "<n> bytes"; null without standbys')


class RedisStatus(_Model):
    aofEnabled: Optional[bool] = _nullable('appendonly is on')
    lastRdbSave: Optional[str] = _nullable('last good RDB snapshot; ' + _TIME)
    aofSize: Optional[str] = _nullable('size of the last AOF snapshot, e.g. "128MB"')


class EnvStatus(_Model):
    lastBackup: Optional[str] = _nullable('newest good .env backup; ' + _TIME)
    versions: int = Field(..., description='versions the backup host holds, all environments')


class BackupStatus(_Model):
    postgresql: PostgresStatus
    redis: RedisStatus
    env: EnvStatus


class PgSnapshot(_Model):
    database: str
    file: str
    time: str
    sha256: str
    sizeBytes: int
    status: str


class PgBackRest(_Model):
    stanza: str
    lastFull: Optional[str] = _nullable(_TIME)
    lastDiff: Optional[str] = _nullable(_TIME)
    lastIncr: Optional[str] = _nullable(_TIME)
    backups: Optional[int] = _nullable('backups in the repository')


class PostgresList(_Model):
    snapshots: List[PgSnapshot]
    pgbackrest: PgBackRest


class RedisSnapshot(_Model):
    kind: Literal['rdb', 'aof']
    file: str
    time: str
    sha256: str
    sizeBytes: int
    status: str


class RedisList(_Model):
    instance: Optional[str] = _nullable('the project\'s Redis instance; null when it has none')
    snapshots: List[RedisSnapshot]


class EnvVersion(_Model):
    environment: str
    version: str
    time: str
    sha256: str
    sizeBytes: int
    trigger: Optional[str] = _nullable('what recorded the version (daily, set, restore ...)')


class EnvList(_Model):
    versions: List[EnvVersion]


class Drill(_Model):
    status: Literal['ok', 'failed']
    lastSuccess: Optional[str] = _nullable(_TIME)
    lastAttempt: Optional[str] = _nullable(_TIME)
    durationSeconds: Optional[float] = _nullable('duration of the last attempt')


class Drills(_Model):
    pgbackrest: Optional[Drill] = _nullable('null when no drill of the kind ever ran')
    pg_snapshot: Optional[Drill] = _nullable('worst over the project\'s databases')
    redis: Optional[Drill] = _nullable('null when no drill of the kind ever ran')
    env: Optional[Drill] = _nullable('worst over the project\'s environments')


class BackupList(_Model):
    project: str
    postgresql: PostgresList
    redis: RedisList
    env: EnvList
    drills: Drills


class AllProjectsList(_Model):
    projects: Dict[str, BackupList] = Field(..., description='backup_list of every project of '
                                                             'the admin key\'s team')


class ErrorBody(_Model):
    detail: str


class ValidationErrorBody(BaseModel):
    detail: List[Dict[str, object]] = Field(..., description='what is wrong, where (loc)')


class Health(_Model):
    status: str


class ProjectParams(_Model):
    project: str = _name_field('the project (a name of the configuration)', ...)


class ListParams(_Model):
    project: Optional[str] = _name_field('the project; without it or null (admin keys only) '
                                         'every project of the key\'s team')


class StatusRequest(_Model):
    tool: Literal['backup_status']
    params: ProjectParams


class ListRequest(_Model):
    tool: Literal['backup_list']
    params: ListParams = Field(default_factory=ListParams)


if HAS_FASTAPI:
    # required is ours to decide: Debian's FastAPI answers a missing key with 403 otherwise
    API_KEY_HEADER = APIKeyHeader(name='X-API-Key', auto_error=False,
                                  description='codeb_{team}_{role}_{token}')
else:
    API_KEY_HEADER = None

_ERRORS = {
    400: ('the body cannot be read at all (FastAPI 0.92: bytes that are not text)', ErrorBody),
    401: ('missing, malformed, unknown or revoked API key (always the same body)', ErrorBody),
    403: ('valid key, but a project of another team or a role without the right', ErrorBody),
    404: ('unknown project', ErrorBody),
    422: ('bad body: not JSON, unknown tool (the message names the allowed ones), bad or '
          'missing project', ValidationErrorBody),
    429: ('too many failed authentications from this address; see Retry-After', ErrorBody),
    503: ('the metrics source (Prometheus) or the key store could not answer', ErrorBody),
}


# ---------------------------------------------------------------- answers (also the CLI's)

def answer(facts, config, tool, project=None, team=None):
    """The answer of ``tool`` for ``project`` (``None``: backup_list of every project of
    ``team``). ``team=None`` is the host's own view (``codeb-backup status``): every team."""
    if tool not in TOOLS:
        raise BackupError('tool must be one of %s; got %r' % (', '.join(TOOLS), tool), param='tool')
    projects = config['projects']
    if project is None:
        if tool != 'backup_list':
            raise BackupError('%s needs a project' % tool, param='project')
        return {'projects': dict((name, facts.backup_list(entry))
                                 for name, entry in sorted(projects.items())
                                 if team is None or entry['team'] == team)}
    if project not in projects:
        raise ProjectNotFound('unknown project %r' % project, param='project')
    if team is not None and projects[project]['team'] != team:
        raise NotAllowed('project %r belongs to another team' % project, param='project')
    return getattr(facts, tool)(projects[project])


class LazyFacts(object):
    """``status.facts.StatusFacts(config)``, built on first use (thread-safe)."""

    def __init__(self, config):
        self._config = config
        self._facts = None
        self._lock = threading.Lock()

    def _get(self):
        with self._lock:
            if self._facts is None:
                from ansible_collections.codeb.backup.plugins.module_utils.status.facts import StatusFacts
                self._facts = StatusFacts(self._config)
            return self._facts

    def backup_status(self, project):
        return self._get().backup_status(project)

    def backup_list(self, project):
        return self._get().backup_list(project)


# ---------------------------------------------------------------- rate limit and log

class FailureLimiter(object):
    """Failed authentications per client address in a sliding window (in memory)."""

    def __init__(self, limit, window, clock=time.monotonic):
        self.limit = int(limit)
        self.window = float(window)
        self.clock = clock
        self._failures = {}
        self._lock = threading.Lock()

    def _recent(self, client, now):
        failures = self._failures.get(client)
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if failures is not None and not failures:
            del self._failures[client]
            return None
        return failures

    def retry_after(self, client):
        """Seconds ``client`` must wait (0: it may try)."""
        with self._lock:
            now = self.clock()
            failures = self._recent(client, now)
            if failures is None or len(failures) < self.limit:
                return 0
            return max(1, int(math.ceil(failures[-self.limit] + self.window - now)))

    def failed(self, client):
        with self._lock:
            now = self.clock()
            failures = self._recent(client, now)
            if failures is None:
                failures = self._failures[client] = deque()
            failures.append(now)
            if len(failures) > self.limit:  # older ones no longer decide anything
                failures.popleft()


def _utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3] + 'Z'


class RequestLog(object):
    """One JSON line per request on ``stream`` (stdout) and, if set, appended to ``path``."""

    FIELDS = ('time', 'client', 'team', 'role', 'tool', 'project', 'status', 'durationSeconds')

    def __init__(self, path=None, stream=None):
        self.stream = stream if stream is not None else sys.stdout
        self.path = path
        self._lock = threading.Lock()

    def write(self, entry, duration):
        record = dict((field, entry.get(field)) for field in self.FIELDS)
        record.update(time=_utc_now(), durationSeconds=round(duration, 6))
        line = json.dumps(record, sort_keys=True) + '\n'
        with self._lock:
            self.stream.write(line)
            self.stream.flush()
            if self.path:
                try:
                    with open(self.path, 'a') as handle:
                        handle.write(line)
                except OSError as exc:  # the answer is already sent; say why the file lacks it
                    sys.stderr.write('codeb-backup serve-api: cannot append to the request log '
                                     '%s: %s\n' % (self.path, exc.strerror))


# ---------------------------------------------------------------- the app

def _header(scope, name):
    for key, value in scope.get('headers') or ():
        if key == name:
            return value
    return None


class _Gate(object):
    """ASGI layer before the routes: rate limit, authentication and the request log of
    ``POST /api/tool``. The key is hashed and compared before any byte of the body is
    read, so a bad key is a 401 whatever the body is."""

    def __init__(self, app, service):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope['type'] != 'http' or scope['path'] != TOOL_PATH or scope['method'] != 'POST':
            await self.app(scope, receive, send)
            return
        service = self.service
        started = time.monotonic()
        client = (scope.get('client') or ('unknown',))[0]
        entry = {'client': client}
        scope[_SCOPE_KEY] = entry

        async def send_noting_status(message):
            if message['type'] == 'http.response.start':
                entry['status'] = message['status']
            await send(message)

        try:
            response = self._refusal(client, scope, entry)
            if response is None:
                await self.app(scope, receive, send_noting_status)
            else:
                await response(scope, receive, send_noting_status)
        finally:
            service.log.write(entry, time.monotonic() - started)

    def _refusal(self, client, scope, entry):
        service = self.service
        retry = service.limiter.retry_after(client)
        if retry:
            return JSONResponse({'detail': 'too many failed authentications from %s; retry in '
                                           '%d s' % (client, retry)},
                                status_code=429, headers={'Retry-After': str(retry)})
        try:
            record = service.keys.authenticate(_header(scope, b'x-api-key'))
        except BackupError as exc:
            sys.stderr.write('codeb-backup serve-api: %s\n' % exc.msg)
            return JSONResponse({'detail': 'the key store cannot be read'}, status_code=503)
        if record is None:
            service.limiter.failed(client)
            return JSONResponse(UNAUTHORIZED, status_code=401)
        entry.update(team=record['team'], role=record['role'])
        return None


class _Service(object):
    def __init__(self, config, facts, keys, limiter, log):
        self.config = config
        self.facts = facts
        self.keys = keys
        self.limiter = limiter
        self.log = log


def create_app(config, facts=None, clock=None, log_stream=None, keys=None):
    """The FastAPI app for ``config`` (``load_config``'s dict). ``facts`` defaults to
    ``status.facts.StatusFacts(config)``; ``clock`` (monotonic seconds) drives the rate
    limit; ``log_stream`` receives the request log (default stdout)."""
    if not HAS_FASTAPI:
        raise BackupError('the status API needs FastAPI and pydantic (Debian: python3-fastapi)',
                          param='fastapi')
    service = _Service(
        config, facts if facts is not None else LazyFacts(config),
        keys if keys is not None else KeyStore(config['keys_file']),
        FailureLimiter(config['rate_limit_failures'], config['rate_limit_window'],
                       clock or time.monotonic),
        RequestLog(config['log_file'], log_stream))

    app = FastAPI(title='codeb.backup status API', version='1',
                  description='Are a project\'s backups healthy? One authenticated answer '
                              'from the facts the backup metrics carry.')

    @app.get('/healthz', response_model=Health, tags=['service'])
    def healthz():
        return {'status': 'ok'}

    responses = dict((code, {'description': text, 'model': model})
                     for code, (text, model) in _ERRORS.items())

    @app.post(TOOL_PATH, response_model=Union[BackupStatus, BackupList, AllProjectsList],
              responses=responses, tags=['tools'],
              summary='backup_status or backup_list of a project')
    def api_tool(request: Request,
                 body: Union[StatusRequest, ListRequest] = Body(...),
                 api_key: Optional[str] = Security(API_KEY_HEADER)):  # pylint: disable=unused-argument
        entry = request.scope.get(_SCOPE_KEY) or {}
        if not entry.get('team'):  # only the gate authenticates; never reached without it
            raise HTTPException(status_code=401, detail=UNAUTHORIZED['detail'])
        project = body.params.project
        entry.update(tool=body.tool, project=project)
        if project is None and entry['role'] != 'admin':
            raise HTTPException(status_code=403, detail='backup_list without a project needs an '
                                                        'admin key; a viewer names the project')
        try:
            return answer(service.facts, config, body.tool, project, team=entry['team'])
        except ProjectNotFound as exc:
            raise HTTPException(status_code=404, detail=exc.msg)
        except NotAllowed as exc:
            raise HTTPException(status_code=403, detail=exc.msg)
        except FactsUnavailable as exc:
            raise HTTPException(status_code=503, detail=exc.msg)

    app.add_middleware(_Gate, service=service)
    return app
