"""Job kinds: each area registers a handler with the parameters it accepts.

    from app.jobs import registry

    @registry.handler("detect_events", symbol=registry.Param(str, default=None))
    def detect(ctx: registry.JobContext, params: dict) -> dict:
        ...   # return a JSON-able result stored on the job row

Parameters are validated before the handler runs (type, default, choices, bounds); unknown or
bad parameters fail the job with a message naming the parameter. Each area registers its kinds in
its ``jobs`` module; ``app.jobs.kinds`` imports them all, and ``load_handlers()`` adds the plug-in
modules named in ``TRAINSRV_HANDLER_MODULES`` (comma-separated), each imported once.

A long handler calls ``ctx.should_stop()`` now and then; when it is true (the trainer is
shutting down, or the job was cancelled or taken over) it either returns a result or raises
``Interrupted`` to hand the job back to the queue, uncounted, to be started again later.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from app.config import Settings, get_settings
from app.errors import TrainsrvError, ValidationError

REQUIRED = object()
# Integers without their own maximum are bounded too: nothing a job counts needs more than 32 bits.
MAX_INT = 2**31 - 1


class Interrupted(Exception):
    """Raised by a handler that stops early on ``ctx.should_stop()``: the job is released, not failed."""


@dataclasses.dataclass(frozen=True)
class Param:
    type: type
    default: Any = REQUIRED
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    # Further checks of the coerced value (e.g. that text is a JSON object): raises ValidationError.
    check: Callable[[str, Any], None] | None = None

    def parse(self, name: str, value: Any) -> Any:
        if value is None:
            if self.default is REQUIRED:
                raise ValidationError(name, "is required")
            return self.default
        value = _coerce(name, self.type, value)
        if self.choices is not None and value not in self.choices:
            raise ValidationError(name, f"must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        if self.min is not None and value < self.min:
            raise ValidationError(name, f"must be >= {self.min}, got {value!r}")
        if self.max is not None and value > self.max:
            raise ValidationError(name, f"must be <= {self.max}, got {value!r}")
        if self.type is int and self.max is None and abs(value) > MAX_INT:
            raise ValidationError(name, f"must be at most {MAX_INT} in size, got {value!r}")
        if self.check is not None:
            self.check(name, value)
        return value


def _coerce(name: str, kind: type, value: Any) -> Any:
    # Values arrive as JSON (typed) or from the CLI (strings); accept both, reject the rest.
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValidationError(name, f"must be a boolean, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise ValidationError(name, f"must be a number, got {value!r}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValidationError(
                name, f"must be {'an integer' if kind is int else 'a number'}, got {value!r}"
            ) from None
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValidationError(name, f"must be an integer, got {value!r}")
        if kind is float and (number != number or number in (float("inf"), float("-inf"))):
            raise ValidationError(name, f"must be finite, got {value!r}")
        return number
    if kind is str:
        if not isinstance(value, str) or not value:
            raise ValidationError(name, f"must be a non-empty string, got {value!r}")
        if "\x00" in value:  # PostgreSQL text (and jsonb) cannot store it
            raise ValidationError(name, "must not contain a NUL character")
        return value
    raise TypeError(f"unsupported parameter type {kind!r}")


@dataclasses.dataclass
class JobContext:
    """What a handler gets besides its parameters."""

    engine: sa.Engine
    settings: Settings
    job_id: int | None = None
    attempt: int = 1
    heartbeat: Callable[[], None] = lambda: None
    should_stop: Callable[[], bool] = lambda: False


@dataclasses.dataclass(frozen=True)
class Handler:
    kind: str
    fn: Callable[[JobContext, dict], dict | None]
    params: dict[str, Param]

    def validate(self, raw: dict | None) -> dict:
        raw = dict(raw or {})
        unknown = sorted(set(raw) - set(self.params))
        if unknown:
            raise ValidationError(
                unknown[0],
                f"is not a parameter of job kind {self.kind!r} (accepted: {', '.join(sorted(self.params)) or 'none'})",
            )
        return {name: p.parse(name, raw.get(name)) for name, p in self.params.items()}


_handlers: dict[str, Handler] = {}
_plugins: set[str] = set()  # plug-in modules already imported


def handler(kind: str, **params: Param):
    """Register ``fn`` as the handler of ``kind`` with its accepted parameters."""

    def register(fn):
        if kind in _handlers and _handlers[kind].fn is not fn:
            raise ValueError(f"job kind {kind!r} registered twice")
        _handlers[kind] = Handler(kind, fn, params)
        return fn

    return register


def load_handlers(settings: Settings | None = None) -> dict[str, Handler]:
    """Every registered handler by kind: the shipped kinds and the configured plug-in modules."""
    from app.jobs import kinds  # noqa: F401 - importing it registers every shipped kind

    modules = (settings or get_settings()).handler_modules
    for module in (m.strip() for m in modules.split(",")):
        if module and module not in _plugins:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise TrainsrvError(f"job handler module {module!r} cannot be imported: {exc}") from exc
            _plugins.add(module)
    return _handlers


def get(kind: str) -> Handler:
    """The handler of ``kind``; modules are loaded only when the kind is not registered yet."""
    handlers = _handlers if kind in _handlers else load_handlers()
    if kind not in handlers:
        raise ValidationError("kind", f"unknown job kind {kind!r} (known: {', '.join(sorted(handlers)) or 'none'})")
    return handlers[kind]
