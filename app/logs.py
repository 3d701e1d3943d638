"""Logging for every trainsrv command: the level from ``TRAINSRV_LOG_LEVEL`` (``-v``: DEBUG), one format per
stream. stderr carries the log, as text lines or, with ``TRAINSRV_LOG_FORMAT=json``, as JSON objects (one
per line, like the job transitions ``trainsrv serve`` writes to stdout); progress bars only on a terminal."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from app.config import get_settings
from app.errors import ConfigError

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
HANDLER_NAME = "trainsrv.stderr"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def level_name() -> str:
    name = get_settings().log_level.strip().upper()
    if name not in LEVELS:
        raise ConfigError(f"TRAINSRV_LOG_LEVEL={get_settings().log_level!r} is not one of {', '.join(LEVELS)}")
    return name


class _CurrentStderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record is written. Commands run in-process (tests,
    notebooks) see ``sys.stderr`` replaced between runs; a handler holding an old one writes to a closed file."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure(verbose: bool = False) -> None:
    """Send trainsrv's logs to stderr at the configured level, in the configured format."""
    fmt = get_settings().log_format.strip().lower()
    if fmt not in ("text", "json"):
        raise ConfigError(f"TRAINSRV_LOG_FORMAT={get_settings().log_format!r} is not text or json")
    level = logging.DEBUG if verbose else getattr(logging, level_name())
    handler = _CurrentStderr()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler (configure may run twice in one process); others' handlers stay.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != HANDLER_NAME and not _default_stderr(h)]
    root.addHandler(handler)
    # Libraries speak at WARNING and above unless we debug; trainsrv's own loggers follow the setting.
    root.setLevel(logging.DEBUG if verbose else max(level, logging.WARNING))
    logging.getLogger("app").setLevel(level)


def _default_stderr(handler: logging.Handler) -> bool:
    # logging.basicConfig's handler (a library or an earlier call set it up): it would print each line twice.
    return type(handler) is logging.StreamHandler and getattr(handler, "stream", None) is sys.stderr


def show_progress(stream=None) -> bool:
    """Progress bars only when a person watches: never into files, pipes or under --json."""
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
