# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A minimal client of Prometheus's instant-query API (``GET /api/v1/query``).

The standard library's urllib, not a client library: no Prometheus query client is
packaged in Debian for the hosts, and the status API needs exactly one GET whose JSON
answer it decodes. Every way the query can fail (refused, timed out, an HTTP error, an
error answer, a body that is not the API's JSON) raises ``FactsUnavailable``, which the
API answers with 503: a fact that cannot be read is never reported as absent.

PromQL text is built here too, so that every label value reaches a query quoted: a value
inside a regex matcher is escaped for RE2 first, then quoted as a PromQL string.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request

from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError
from ansible_collections.codeb.backup.plugins.module_utils.status.errors import FactsUnavailable

QUERY_PATH = '/api/v1/query'
# an answer larger than this is not one of our queries' answers
MAX_ANSWER_BYTES = 16 * 1024 * 1024
# characters with a meaning in an RE2 pattern; escaping any other one is unnecessary
_RE2_SPECIAL = frozenset('\\.+*?()|[]{}^$')


def regex_escape(value):
    """``value`` as an RE2 pattern matching exactly that text."""
    return ''.join('\\' + char if char in _RE2_SPECIAL else char for char in str(value))


def quote(value):
    """``value`` as a PromQL double-quoted string literal."""
    text = str(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')
    return '"%s"' % text


def alternatives(values):
    """An RE2 alternation matching exactly the given literal values (sorted, unique)."""
    return '|'.join(regex_escape(value) for value in sorted(set(values)))


def sample_value(text):
    """A sample's value as the API encodes it (a string) as a float, or None when it is not a
    finite number (NaN marks a missing value, not a fact)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class PrometheusClient(object):
    """Instant queries against ``url`` (``http(s)://host:port``, an optional path prefix)."""

    def __init__(self, url, timeout=5.0):
        parsed = urllib.parse.urlsplit(url if isinstance(url, str) else '')
        if parsed.scheme not in ('http', 'https') or not parsed.netloc:
            raise BackupError('prometheus_url must be an http:// or https:// URL like '
                              'http://127.0.0.1:9090; got %r' % (url,), param='prometheus_url')
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise BackupError('prometheus_timeout must be a positive number of seconds; got %r'
                              % (timeout,), param='prometheus_timeout')
        self.url = url.rstrip('/')
        self.timeout = float(timeout)
        # The configured URL is the only place to ask: http_proxy and friends in the
        # service's environment must not send the query somewhere else.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def query(self, expr, at=None):
        """The instant vector ``expr`` evaluates to (at Unix time ``at``, default now) as a
        list of ``(labels, value)``; a scalar answer is one sample without labels."""
        params = {'query': expr}
        if at is not None:
            params['time'] = '%.3f' % at
        url = '%s%s?%s' % (self.url, QUERY_PATH, urllib.parse.urlencode(params))
        data = self._answer(url, expr)
        result_type, result = data.get('resultType'), data.get('result')
        if result_type == 'vector' and isinstance(result, list):
            samples = []
            for item in result:
                if not isinstance(item, dict) or not isinstance(item.get('metric'), dict) \
                        or not isinstance(item.get('value'), list) or len(item['value']) != 2:
                    raise FactsUnavailable('Prometheus at %s answered %s with a malformed sample'
                                           % (self.url, expr), param='prometheus_url')
                samples.append((item['metric'], sample_value(item['value'][1])))
            return samples
        if result_type == 'scalar' and isinstance(result, list) and len(result) == 2:
            return [({}, sample_value(result[1]))]
        raise FactsUnavailable('Prometheus at %s answered %s with result type %r, not an '
                               'instant vector' % (self.url, expr, result_type),
                               param='prometheus_url')

    def _answer(self, url, expr):
        """The ``data`` of a successful answer; FactsUnavailable for anything else."""
        try:
            with self._opener.open(url, timeout=self.timeout) as response:
                body = response.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as error:
            # Prometheus explains a bad query (400/422) or an overload (503) in a JSON body
            body = error.read(MAX_ANSWER_BYTES + 1)
            reason = _error_text(body) or 'HTTP %d %s' % (error.code, error.reason)
            raise FactsUnavailable('Prometheus at %s refused the query %s: %s'
                                   % (self.url, expr, reason), param='prometheus_url')
        except (OSError, ValueError) as error:  # refused, unreachable, timed out, bad URL
            raise FactsUnavailable('Prometheus at %s cannot be reached: %s'
                                   % (self.url, getattr(error, 'reason', None) or error),
                                   param='prometheus_url')
        if len(body) > MAX_ANSWER_BYTES:
            raise FactsUnavailable('Prometheus at %s answered %s with more than %d bytes'
                                   % (self.url, expr, MAX_ANSWER_BYTES), param='prometheus_url')
        try:
            answer = json.loads(body.decode('utf-8'))
        except ValueError:
            raise FactsUnavailable('Prometheus at %s did not answer with JSON (is prometheus_url '
                                   'the Prometheus server?): %r' % (self.url, body[:120]),
                                   param='prometheus_url')
        if not isinstance(answer, dict) or answer.get('status') != 'success' \
                or not isinstance(answer.get('data'), dict):
            reason = answer.get('error') if isinstance(answer, dict) else None
            raise FactsUnavailable('Prometheus at %s did not answer %s with success: %s'
                                   % (self.url, expr, reason or 'an unknown answer'),
                                   param='prometheus_url')
        return answer['data']


def _error_text(body):
    """The ``error`` of an API error body, if it is one."""
    try:
        answer = json.loads(body.decode('utf-8'))
    except ValueError:
        return None
    if isinstance(answer, dict) and answer.get('error'):
        return '%s: %s' % (answer.get('errorType', 'error'), answer['error'])
    return None
