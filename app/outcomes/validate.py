"""Label due predictions with their outcomes, in batches of one SQL statement each.

The labelling itself (entry / exit, excursions, profit after costs, optimal action, score) is
the named query ``outcomes.label_batch``; this module only drives it: batches by prediction id,
one transaction per batch under an advisory lock, and the candle-correction log that makes a
re-run re-label outcomes whose candles changed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

import sqlalchemy as sa

from app.config import Settings, get_settings
from app.db import locks, queries
from app.errors import ValidationError
from app.outcomes.grid import bar_seconds

log = logging.getLogger(__name__)

_COUNTS = ("considered", "validated", "relabelled", "pending_new", "pending_changed")


@dataclasses.dataclass
class ValidationResult:
    """What one run did. ``considered`` counts predictions examined; the others count rows written."""

    considered: int = 0
    validated: int = 0
    relabelled: int = 0
    pending_new: int = 0
    pending_changed: int = 0
    batches: int = 0
    stopped: bool = False

    def add(self, row: dict) -> None:
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + int(row[name] or 0))
        self.batches += 1

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def validate_outcomes(
    engine: sa.Engine,
    settings: Settings | None = None,
    *,
    symbol: str | None = None,
    as_of: dt.datetime | None = None,
    recheck: bool = False,
    batch_size: int | None = None,
    should_stop=lambda: False,
) -> ValidationResult:
    """Label every prediction whose horizon has elapsed at ``as_of`` (default: now).

    New predictions and pending ones are (re)tried; validated ones are recomputed when candles
    in their window were corrected since (or all of them with ``recheck``, e.g. after changing
    fees). Rows whose result is unchanged are not touched, so a re-run is a no-op.
    """
    settings = settings or get_settings()
    params = _params(settings, symbol, as_of, recheck, batch_size)
    result = ValidationResult()
    refresh_statistics(engine)
    with engine.connect() as conn:
        params["corrections_upto"] = conn.execute(queries.get("outcomes.corrections_upto")).scalar_one()
    while True:
        if should_stop():
            result.stopped = True  # each batch committed on its own: the next run continues
            break
        with engine.begin() as conn:
            row = label_batch(conn, params)
        result.add(row)
        if row["considered"] < params["batch_size"]:
            _clear_corrections(engine, params)
            break
        params["after_id"] = row["last_id"]
    log.info("outcome validation: %s", result.as_dict())
    return result


def refresh_statistics(engine: sa.Engine) -> bool:
    """ANALYZE the tables labelling reads when their statistics are missing or well behind their size.

    Right after an orchestrator's writes (before autovacuum gets to them) the planner believes the
    new predictions are a handful of rows and joins each of them to every window: 2,000 fresh
    predictions took 35 s instead of 0.1 s (bench/bench_loop.py freshness). The check reads only
    the catalog and file sizes; the ANALYZE samples a bounded number of rows, and runs again only
    after a table has grown by another 20 %, and only for the tables that did. True when any ran.
    """
    with engine.begin() as conn:
        stale = conn.execute(queries.get("outcomes.stale_statistics")).scalars().all()
        for table in stale:
            conn.execute(queries.get(ANALYZE_QUERIES[table]))
    return bool(stale)


# The named ANALYZE statement of each table labelling reads.
ANALYZE_QUERIES = {
    "predictions": "outcomes.analyze_predictions",
    "input_packages": "outcomes.analyze_input_packages",
    "outcomes": "outcomes.analyze_outcomes",
    "candles": "ingest.analyze_candles",
}


def label_batch(conn: sa.Connection, params: dict) -> dict:
    """Run one labelling statement in the caller's transaction; returns its counts and last id."""
    locks.take(conn, "outcomes.lock_labelling", "outcome labelling")
    conn.execute(queries.get("outcomes.batch_memory"))
    return dict(conn.execute(queries.get("outcomes.label_batch"), params).mappings().one())


def label_params(settings: Settings, **overrides) -> dict:
    """The bound parameters of ``outcomes.label_batch`` for ``settings`` (tests drive batches directly)."""
    params = _params(settings, None, None, False, None)
    params["corrections_upto"] = 0
    params.update(overrides)
    return params


def _params(settings: Settings, symbol, as_of, recheck, batch_size) -> dict:
    batch_size = settings.validation_batch_size if batch_size is None else batch_size
    if batch_size < 1:
        raise ValidationError("batch_size", f"must be >= 1, got {batch_size}")
    for name in ("fee_rate", "slippage_rate"):
        value = getattr(settings, name)
        if not 0 <= value < 0.5:
            raise ValidationError(name, f"must be in [0, 0.5), got {value}")
    if as_of is not None and as_of.tzinfo is None:
        raise ValidationError("as_of", "must be timezone-aware")
    return {
        "timeframe": settings.outcome_timeframe,
        "bar_s": bar_seconds(settings.outcome_timeframe, "outcome_timeframe"),
        "fee_rate": settings.fee_rate,
        "slippage_rate": settings.slippage_rate,
        "symbol": symbol,
        "as_of": as_of or dt.datetime.now(dt.UTC),
        "recheck": recheck,
        "batch_size": batch_size,
        "after_id": 0,
    }


def _clear_corrections(engine: sa.Engine, params: dict) -> None:
    # Only after the whole run: a run that stops early leaves the entries for the next one.
    with engine.begin() as conn:
        conn.execute(
            queries.get("outcomes.clear_corrections"),
            {"corrections_upto": params["corrections_upto"], "symbol": params["symbol"]},
        )


def summary(conn: sa.Connection) -> dict:
    """Outcome counts: validated, pending, revised (relabelled at least once), profitable."""
    return dict(conn.execute(queries.get("outcomes.summary")).mappings().one())
