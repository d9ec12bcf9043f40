# -*- coding: utf-8 -*-
# Copyright: codeb.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One way to run a backup, restore or verification job and report its outcome.

Every job of every subsystem runs inside ``Job``: it times the run and writes the job's
metrics once, with one policy:

- success: attempt and success time, status 1, duration, size;
- any failure, of any exception type: attempt time and status 0, the previous success
  time kept; the exception reaches the caller as a ``BackupError`` (an ``OSError`` such
  as a full disk says so and what to do);
- a metrics write that fails never replaces the job's own error; after a successful job
  it fails the run (the artifact is kept), because a success monitoring cannot see
  looks like a stopped backup;
- check mode writes nothing.

Nothing else in the core writes outcome metrics. A runner that keeps several jobs open at
once (one per snapshot kind) calls ``start`` and ``finish`` instead of ``with``.
"""

from __future__ import annotations

import time

from ansible_collections.codeb.backup.plugins.module_utils import metrics
from ansible_collections.codeb.backup.plugins.module_utils.errors import BackupError, as_backup_error


class Job(object):
    """``with Job(kind, target, metrics_dir) as job: ... job.size = n``"""

    def __init__(self, kind, target, metrics_dir=metrics.DEFAULT_TEXTFILE_DIR, check_mode=False,
                 what=None):
        self.kind = kind
        self.target = target
        self.metrics_dir = metrics_dir
        self.check_mode = check_mode
        self.what = what or '%s of %s' % (kind, target)
        self.size = None
        self.gauges = {}  # extra gauges (metrics.EXTRA_GAUGES), written whatever the outcome
        self.started = time.monotonic()
        self._record_outcome = True

    def skip(self):
        """Nothing was attempted (the work was already done): record no outcome."""
        self._record_outcome = False

    def duration(self):
        return round(time.monotonic() - self.started, 3)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, _tb):
        if exc_type is not None and not issubclass(exc_type, Exception):
            # KeyboardInterrupt / SystemExit: record the failure, let it propagate.
            self._record(False)
            return False
        error = self.finish(exc)
        if error is None or error is exc:
            return False
        raise error from exc

    def start(self):
        """Start timing; for runners that hold several jobs open at once (one per snapshot
        kind of one run) and cannot nest ``with`` blocks."""
        self.started = time.monotonic()
        return self

    def finish(self, exc=None):
        """Record the outcome (``exc`` None: success) exactly once; return the
        ``BackupError`` the run must fail with, or None. Never raises."""
        ok = exc is None
        metrics_error = self._record(ok)
        if not ok:
            error = as_backup_error(exc, self.what)
            if metrics_error:
                error.details.setdefault('metrics_error', metrics_error)
            return error
        if metrics_error:
            return BackupError('%s succeeded and its artifact is kept, but its metrics could not '
                               'be written: %s. Monitoring will report this job as failing '
                               'until that is fixed.' % (self.what, metrics_error),
                               param='metrics_dir', metrics_error=metrics_error)
        return None

    def _record(self, ok):
        """Write the outcome; return None, or the error text if the write failed."""
        if self.check_mode or not self.metrics_dir or not self._record_outcome:
            return None
        try:
            metrics.write_job_metrics(self.kind, self.target, ok, self.duration(),
                                      size=self.size if ok else None,
                                      textfile_dir=self.metrics_dir, gauges=self.gauges)
        except Exception as exc:  # never let reporting hide the job's own outcome
            return str(as_backup_error(exc, 'writing metrics to %s' % self.metrics_dir))
        return None
