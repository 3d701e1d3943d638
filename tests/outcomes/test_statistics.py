"""Labelling refreshes the planner's statistics of fresh tables first (its cost must not depend on
whether autovacuum has analysed the orchestrator's latest writes)."""

import sqlalchemy as sa

from app.db import queries
from app.outcomes.validate import refresh_statistics


def _stale(engine) -> list[str]:
    with engine.connect() as conn:
        return conn.execute(queries.get("outcomes.stale_statistics")).scalars().all()


def test_stale_tables_are_analysed_once_until_they_grow(engine):
    assert _stale(engine) == ["candles", "input_packages", "outcomes", "predictions"]  # never analysed
    assert refresh_statistics(engine) is True
    assert _stale(engine) == [] and refresh_statistics(engine) is False
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO candles (symbol, timeframe, ts, open, high, low, close, volume) "
                "SELECT 'SIM', '1m', timestamptz '2024-01-01' + make_interval(mins => i), 1, 1, 1, 1, 1 "
                "FROM generate_series(1, 5000) AS i"
            )
        )
    assert _stale(engine) == ["candles"]
    assert refresh_statistics(engine) is True and _stale(engine) == []
