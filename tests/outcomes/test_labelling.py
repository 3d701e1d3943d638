"""Outcomes hand-computed on real BTC-PERP windows; pending on gaps; idempotent re-runs."""

import datetime as dt
import math

import pytest
import sqlalchemy as sa

from app.config import Settings
from app.outcomes.validate import validate_outcomes

from .support import UTC, insert_candles, outcome, read_candles, record

COST = 2 * (0.0004 + 0.0001)  # round trip: fee + slippage on entry and on exit
SETTINGS = Settings(fee_rate=0.0004, slippage_rate=0.0001)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def score(profit: float, risk: float) -> float:
    return 1 / (1 + math.exp(-profit / risk))


@pytest.fixture
def candles(engine, real_candles_path):
    """The first 500 real bars: 2021-12-31 23:01 to 2022-01-01 07:20."""
    insert_candles(engine, read_candles(real_candles_path, 0, 500))
    return engine


def _label(engine, settings=SETTINGS, **kw):
    return validate_outcomes(engine, settings, **kw)


def test_long_on_the_new_year_breakout(candles):
    # Bars 05:21..05:24 (the first bar opening after 05:20:30, the last closing by 05:25:30):
    # open 46823 at 05:21, close 47200 at 05:24, high 47282, low 46823.
    pid = record(candles, at("2022-01-01 05:20:30"), 300, "long")
    result = _label(candles)
    assert result.validated == 1
    with candles.connect() as conn:
        o = outcome(conn, pid)
    ret = 47200 / 46823 - 1
    assert o["status"] == "validated" and o["pending_reason"] is None
    assert (o["entry_price"], o["exit_price"]) == (46823.0, 47200.0)
    assert o["price_return"] == pytest.approx(ret)
    assert o["max_favorable_excursion"] == pytest.approx(47282 / 46823 - 1)
    assert o["max_adverse_excursion"] == 0.0  # the low never went under the entry
    assert o["actual_profit"] == pytest.approx(ret - COST)
    assert o["profitability_score"] == pytest.approx(score(ret - COST, COST))  # risk floored at the cost
    assert o["optimal_action"] == "long" and o["is_profitable"] is True
    assert o["validated_at"] is not None and o["revision"] == 1


def test_short_on_a_drop(candles):
    # Predicted exactly at 04:11:00: the 04:11 bar opens at the prediction time, so it is not used.
    # Bars 04:12..04:15: open 46853, close 46652, high 46854, low 46620.
    pid = record(candles, at("2022-01-01 04:11:00"), 300, "short")
    _label(candles)
    with candles.connect() as conn:
        o = outcome(conn, pid)
    ret = 46652 / 46853 - 1
    mae = 46854 / 46853 - 1
    assert (o["entry_price"], o["exit_price"]) == (46853.0, 46652.0)
    assert o["max_favorable_excursion"] == pytest.approx(1 - 46620 / 46853)
    assert o["max_adverse_excursion"] == pytest.approx(mae)
    assert o["actual_profit"] == pytest.approx(-ret - COST)
    assert o["profitability_score"] == pytest.approx(score(-ret - COST, COST))
    assert o["optimal_action"] == "short" and o["is_profitable"] is True


def test_hold_and_fees_flipping_the_sign(candles):
    # Bars 00:42..00:45: open 46588, close 46624: +0.077 %, less than the 0.1 % round-trip cost.
    long_id = record(candles, at("2022-01-01 00:41:00"), 300, "long")
    hold_id = record(candles, at("2022-01-01 00:41:00"), 300, "hold")
    _label(candles)
    with candles.connect() as conn:
        long_, hold = outcome(conn, long_id), outcome(conn, hold_id)
    ret = 46624 / 46588 - 1
    assert ret > 0 and long_["actual_profit"] == pytest.approx(ret - COST) and long_["actual_profit"] < 0
    assert long_["is_profitable"] is False and long_["optimal_action"] == "hold"
    assert long_["profitability_score"] < 0.5
    assert hold["actual_profit"] == 0 and hold["profitability_score"] == 0.5
    assert hold["optimal_action"] == "hold" and hold["is_profitable"] is False
    assert hold["max_favorable_excursion"] is None  # no position, no excursion

    # Without costs the same long is a winner; re-checking records a new revision of its label.
    free = Settings(fee_rate=0.0, slippage_rate=0.0)
    result = _label(candles, free, recheck=True)
    assert result.relabelled == 2  # the long flips; the hold's optimal action becomes long
    with candles.connect() as conn:
        long_ = outcome(conn, long_id)
    assert long_["actual_profit"] == pytest.approx(ret) and long_["is_profitable"] is True
    assert long_["optimal_action"] == "long" and long_["revision"] == 2


def test_nothing_is_labelled_before_its_horizon_has_passed(candles):
    predicted_at = at("2022-01-01 05:20:30")
    pid = record(candles, predicted_at, 300, "long")
    early = _label(candles, as_of=predicted_at + dt.timedelta(seconds=299))
    assert early.considered == 0
    with candles.connect() as conn:
        assert outcome(conn, pid) is None
    _label(candles, as_of=predicted_at + dt.timedelta(seconds=300))
    with candles.connect() as conn:
        assert outcome(conn, pid)["status"] == "validated"


def test_a_gap_leaves_the_prediction_pending_until_the_candles_arrive(candles):
    with candles.begin() as conn:
        missing = conn.execute(
            sa.text(
                "DELETE FROM candles WHERE ts = '2022-01-01 05:23:00+00' RETURNING ts, open, high, low, close, volume"
            )
        ).one()
    pid = record(candles, at("2022-01-01 05:20:30"), 300, "long")
    result = _label(candles)
    assert result.pending_new == 1 and result.validated == 0
    with candles.connect() as conn:
        o = outcome(conn, pid)
    assert o["status"] == "pending" and o["actual_profit"] is None
    assert (
        o["pending_reason"]
        == "gap in 1m candles: 3 of 4 bars present from 2022-01-01T05:21:00Z to 2022-01-01T05:24:00Z"
    )

    assert _label(candles).pending_changed == 0  # still the same gap: nothing rewritten
    insert_candles(candles, [tuple(missing)])
    assert _label(candles).validated == 1
    with candles.connect() as conn:
        o = outcome(conn, pid)
    assert o["status"] == "validated" and o["pending_reason"] is None and o["revision"] == 1


def test_no_candles_for_the_symbol_and_too_short_horizons_are_pending(candles):
    other = record(candles, at("2022-01-01 05:20:30"), 300, "long", symbol="ETH-PERP")
    short = record(candles, at("2022-01-01 05:20:00"), 60, "long")
    _label(candles)
    with candles.connect() as conn:
        assert outcome(conn, other)["pending_reason"].startswith("gap in 1m candles: 0 of 4 bars")
        assert outcome(conn, short)["pending_reason"] == "horizon is shorter than one 1m bar after the prediction time"


def test_rerun_is_idempotent_and_corrected_candles_are_relabelled(candles):
    pid = record(candles, at("2022-01-01 05:20:30"), 300, "long")
    untouched = record(candles, at("2022-01-01 04:11:00"), 300, "short")
    _label(candles)
    with candles.connect() as conn:
        first = outcome(conn, pid)
    again = _label(candles)
    assert (again.validated, again.relabelled, again.pending_new, again.pending_changed) == (0, 0, 0, 0)
    with candles.connect() as conn:
        assert outcome(conn, pid) == first

    # The exchange corrects the exit bar's close (and high, to stay consistent).
    with candles.begin() as conn:
        conn.execute(sa.text("UPDATE candles SET close = 47300, high = 47300 WHERE ts = '2022-01-01 05:24:00+00'"))
    result = _label(candles)
    assert result.relabelled == 1 and result.considered == 1  # only the overlapping outcome is recomputed
    with candles.connect() as conn:
        fixed, other = outcome(conn, pid), outcome(conn, untouched)
        left = conn.execute(sa.text("SELECT count(*) FROM candle_corrections")).scalar_one()
    assert fixed["exit_price"] == 47300.0 and fixed["revision"] == 2
    assert fixed["actual_profit"] == pytest.approx(47300 / 46823 - 1 - COST)
    assert fixed["updated_at"] > first["updated_at"]
    assert other["revision"] == 1
    assert left == 0  # handled corrections are cleared


def test_rewriting_identical_candles_logs_no_correction(candles):
    with candles.begin() as conn:
        conn.execute(sa.text("DELETE FROM candle_corrections"))
        conn.execute(sa.text("UPDATE candles SET close = close WHERE ts < '2022-01-01 01:00:00+00'"))
        assert conn.execute(sa.text("SELECT count(*) FROM candle_corrections")).scalar_one() == 0


def test_bad_settings_name_the_field(candles):
    from app.errors import ValidationError

    with pytest.raises(ValidationError, match="^outcome_timeframe"):
        _label(candles, Settings(outcome_timeframe="1 minute"))
    with pytest.raises(ValidationError, match="fee_rate"):
        _label(candles, Settings(fee_rate=-0.1))
