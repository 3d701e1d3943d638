"""One structured (JSON) log line per job transition and worker life event.

Lines go to the ``app.jobs.transitions`` logger; ``trainsrv serve`` sends them to stdout as bare
JSON objects, one per line, so ops can pipe them to ``jq`` or a log shipper:

    {"ts":"2025-01-01T12:00:00.123+00:00","event":"job.succeeded","job_id":7,"kind":"noop",...}

Events: ``worker.started`` / ``worker.stopped`` / ``worker.db_unavailable`` / ``worker.db_restored``,
``job.enqueued`` (scheduler), ``job.started``, ``job.succeeded``, ``job.retry_scheduled``,
``job.failed``, ``job.released``, ``job.lost`` (the row stopped being ours: cancelled or
rescued), ``job.abandoned`` (outcome not recorded: database down at shutdown), ``job.rescued``,
``scheduler.error``, ``worker.lane_failed`` (the maintenance lane died; the process stops).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import IO

from app import metrics

log = logging.getLogger("app.jobs.transitions")


def emit(event: str, **fields) -> None:
    """Log one transition as a JSON object with a UTC timestamp and the event name first."""
    metrics.on_event(event, fields)
    if not log.isEnabledFor(logging.INFO):
        return
    record = {"ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "event": event, **fields}
    log.info(json.dumps(record, default=str, separators=(",", ":")))


def to_stream(stream: IO[str] | None = None) -> None:
    """Write transitions as bare JSON lines to ``stream`` (default stdout), apart from other logs."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
