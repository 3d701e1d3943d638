"""The leakage audit (v_leakage_audit, `trainsrv audit`): empty on what the pipeline writes, and it finds each
kind of look-ahead when one is planted."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.db.engine import make_engine
from app.demo import candle_episodes as ce
from app.demo import market
from app.events.detect import detect_events
from app.ingest.candles import ingest_candles
from app.outcomes.validate import validate_outcomes

UTC = dt.UTC
START = dt.datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine(module_db_url):
    eng = make_engine(module_db_url)
    yield eng
    eng.dispose()


def _audit(conn, check: str) -> list:
    return conn.execute(sa.text("SELECT item_id FROM v_leakage_audit WHERE check_name = :c"), {"c": check}).all()


def _reset(engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE candles, input_packages, predictions, outcomes, market_events CASCADE"))


def _candles(engine, minutes: int, seed: int, spikes: float = 1.5) -> dict:
    cols = market.simulate(market.MarketSpec(minutes=minutes, seed=seed, spikes_per_day=spikes, start=START))
    ingest_candles(engine, cols, ce.SYMBOL, "1m", progress=False)
    return cols


def _package(conn, minute: int, cols) -> int:
    t = cols["timestamp"].astype("datetime64[s]").astype(np.int64)
    bars = np.stack([cols[k] for k in ("open", "high", "low", "close", "volume")], axis=1)
    return ce.insert_package(conn, ce.package_at(t, bars, minute))


SHORT = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SHORT
@given(st.lists(st.integers(-600, 7200), min_size=1, max_size=6), st.integers(0, 5))
def test_outcomes_are_priced_from_bars_after_the_prediction_and_planted_ones_are_found(engine, offsets_s, seed):
    """Whatever the prediction time (on a bar boundary or inside a bar), the validator prices it from bars
    strictly after it; a prediction dated before its package is reported."""
    _reset(engine)
    cols = _candles(engine, 400, seed)
    with engine.begin() as conn:
        pid = _package(conn, 200, cols)
        pkg_ts = conn.execute(sa.text("SELECT ts FROM input_packages WHERE id = :i"), {"i": pid}).scalar_one()
        early = []
        for k, off in enumerate(offsets_s):
            at = pkg_ts + dt.timedelta(seconds=off)
            pred = ce.insert_prediction(conn, pid, at, ("long", "short", "hold")[k % 3], 900)
            conn.execute(
                sa.text("UPDATE predictions SET prediction_key = :k WHERE id = :i"), {"k": f"p{k}-{pred}", "i": pred}
            )
            if off < 0:
                early.append(pred)
    validate_outcomes(engine, Settings(), as_of=START + dt.timedelta(days=2))
    with engine.connect() as conn:
        assert _audit(conn, "outcome_not_after_prediction") == []
        assert sorted(r.item_id for r in _audit(conn, "package_after_prediction")) == sorted(early)
    with engine.begin() as conn:  # an outcome whose entry is no bar opening after its prediction
        planted = conn.execute(
            sa.text(
                "UPDATE outcomes SET entry_price = entry_price * 1.5 WHERE prediction_id = "
                "(SELECT min(prediction_id) FROM outcomes WHERE status = 'validated') RETURNING prediction_id"
            )
        ).scalar()
    with engine.connect() as conn:
        assert [r.item_id for r in _audit(conn, "outcome_not_after_prediction")] == ([planted] if planted else [])


@SHORT
@given(st.integers(0, 50), st.integers(3, 15))
def test_premium_marks_use_only_events_known_at_the_package_time(engine, seed, every):
    """Packages every few minutes through a market with volatility bursts: after detection, no premium
    package precedes the close of the bar that flagged its event; one marked by hand before it is reported."""
    _reset(engine)
    cols = _candles(engine, 900, seed, spikes=24.0)
    with engine.begin() as conn:
        ids = [_package(conn, m, cols) for m in range(120, 880, every)]
    detect_events(engine, Settings())
    with engine.connect() as conn:
        assert _audit(conn, "premium_before_event_known") == []
    with engine.begin() as conn:
        early = conn.execute(
            sa.text(
                "SELECT p.id FROM input_packages p JOIN market_events e ON p.ts >= e.started_at AND p.ts < e.known_at "
                "WHERE NOT p.is_premium AND p.id = ANY(:ids) LIMIT 1"
            ),
            {"ids": ids},
        ).scalar()
        if early is None:
            return
        conn.execute(sa.text("UPDATE input_packages SET is_premium = true WHERE id = :i"), {"i": early})
    with engine.connect() as conn:
        found = [r.item_id for r in _audit(conn, "premium_before_event_known")]
    # Reported unless another event that contains it was already known at its time.
    with engine.connect() as conn:
        known = conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM market_events e JOIN input_packages p ON p.id = :i "
                "WHERE p.ts BETWEEN e.started_at AND e.ended_at AND e.known_at <= p.ts)"
            ),
            {"i": early},
        ).scalar_one()
    assert (early in found) != known
