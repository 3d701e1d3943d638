"""Property: candles before the prediction or after the horizon never change an outcome."""

import datetime as dt

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import Settings
from app.db.engine import make_engine
from app.outcomes.validate import label_batch, label_params

from .support import UTC, insert_candles, outcome, package_at, predict, read_candles

BASE = dt.datetime(2022, 1, 1, 1, 0, tzinfo=UTC)  # 120 real bars before it, 380 after
LABEL = (
    "status",
    "pending_reason",
    "entry_price",
    "exit_price",
    "price_return",
    "max_favorable_excursion",
    "max_adverse_excursion",
    "actual_profit",
    "profitability_score",
    "optimal_action",
    "is_profitable",
)
PARAMS = label_params(Settings(), as_of=dt.datetime(2030, 1, 1, tzinfo=UTC))
SCALE = sa.text(
    "UPDATE candles SET open = open * :m, high = high * :m, low = low * :m, close = close * :m WHERE ts = :ts"
)


@pytest.fixture(scope="module")
def setup(module_db_url, real_candles_path):
    """Real bars and one package at BASE that every example's prediction is made from."""
    eng = make_engine(module_db_url)
    insert_candles(eng, read_candles(real_candles_path, 0, 500))
    yield eng, package_at(eng, BASE)
    eng.dispose()


def _floor_minute(t: dt.datetime) -> dt.datetime:
    return t.replace(second=0, microsecond=0)


def _label(conn, pid, recheck=False) -> dict:
    # Only this prediction: earlier examples left theirs in the module's database.
    label_batch(conn, {**PARAMS, "recheck": recheck, "after_id": pid - 1, "batch_size": 1})
    return {k: outcome(conn, pid)[k] for k in LABEL}


def _outcome_after_changing(setup, offset_s, horizon_s, action, bars) -> tuple[dict, dict]:
    """The label before and after scaling the candles at the given times, in a rolled-back transaction."""
    engine, package_id = setup
    pid = predict(engine, package_id, BASE + dt.timedelta(seconds=offset_s), horizon_s, action)
    with engine.connect() as conn, conn.begin() as tx:
        before = _label(conn, pid)
        for ts, factor in bars:
            conn.execute(SCALE, {"ts": ts, "m": factor})
        after = _label(conn, pid, recheck=True)
        tx.rollback()
    return before, after


changes = st.lists(st.tuples(st.integers(0, 90), st.floats(0.5, 2.0)), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    offset_s=st.integers(0, 120 * 60),
    horizon_s=st.integers(60, 3600),
    action=st.sampled_from(["long", "short", "hold"]),
    before=changes,
    after=changes,
)
def test_candles_outside_the_window_never_change_the_outcome(setup, offset_s, horizon_s, action, before, after):
    predicted_at = BASE + dt.timedelta(seconds=offset_s)
    horizon_end = predicted_at + dt.timedelta(seconds=horizon_s)
    # Bars opening at or before the prediction time, and bars closing after the horizon end.
    bars = [(_floor_minute(predicted_at) - dt.timedelta(minutes=k), m) for k, m in before]
    bars += [(_floor_minute(horizon_end) + dt.timedelta(minutes=k), m) for k, m in after]
    first, second = _outcome_after_changing(setup, offset_s, horizon_s, action, bars)
    assert second == first


def test_a_candle_inside_the_window_does_change_it(setup):
    # The control for the property above: the same machinery sees a change inside the window.
    inside = BASE + dt.timedelta(minutes=3)
    first, second = _outcome_after_changing(setup, 30, 300, "long", [(inside, 1.01)])
    assert first["status"] == "validated" and second != first
