"""The database itself refuses rows that break the invariants."""

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

PACKAGE = (
    "INSERT INTO input_packages (symbol, ts, payload, payload_format, data_hash, completeness_score, is_valid) "
    "VALUES ('BTC', now(), '\\x00', 'test', :hash, :completeness, true) RETURNING id"
)
CANDLE = (
    "INSERT INTO candles (symbol, timeframe, ts, open, high, low, close, volume) "
    "VALUES ('BTC', :tf, now(), :o, :h, :l, :c, :v)"
)


def _package(conn, completeness=1.0, hash_=b"\x01" * 32):
    return conn.execute(sa.text(PACKAGE), {"hash": hash_, "completeness": completeness}).scalar()


def _rejected(engine, statement, params, constraint):
    with pytest.raises(IntegrityError) as err, engine.begin() as conn:
        if callable(statement):
            statement(conn)
        else:
            conn.execute(sa.text(statement), params)
    assert err.value.orig.diag.constraint_name == constraint


def test_good_rows_are_accepted(engine):
    with engine.begin() as conn:
        conn.execute(sa.text(CANDLE), {"tf": "1m", "o": 10, "h": 12, "l": 9, "c": 11, "v": 5})
        _package(conn)


@pytest.mark.parametrize(
    "values, constraint",
    [
        ({"tf": "1m", "o": 10, "h": 9, "l": 11, "c": 10, "v": 1}, "ck_candles_ohlc_consistent"),
        ({"tf": "1m", "o": 10, "h": 12, "l": 9, "c": 13, "v": 1}, "ck_candles_ohlc_consistent"),
        ({"tf": "1m", "o": 10, "h": 12, "l": 9, "c": 11, "v": -1}, "ck_candles_volume_non_negative"),
        ({"tf": "1m", "o": float("nan"), "h": 12, "l": 9, "c": 11, "v": 1}, "ck_candles_finite"),
        ({"tf": "1m", "o": 10, "h": float("inf"), "l": 9, "c": 11, "v": 1}, "ck_candles_finite"),
        ({"tf": "one minute", "o": 10, "h": 12, "l": 9, "c": 11, "v": 1}, "ck_candles_timeframe_format"),
    ],
)
def test_bad_candles_are_rejected(engine, values, constraint):
    _rejected(engine, CANDLE, values, constraint)


def test_completeness_above_one_is_rejected(engine):
    _rejected(engine, lambda c: _package(c, completeness=1.5), None, "ck_input_packages_completeness_range")


def test_short_hash_is_rejected(engine):
    _rejected(engine, lambda c: _package(c, hash_=b"\x01" * 16), None, "ck_input_packages_hash_is_sha256")


def _prediction(conn, horizon=60, kind="cnn", action="long", confidence=0.5, package_id=None):
    package_id = package_id or _package(conn)
    conn.execute(
        sa.text(
            "INSERT INTO predictions (prediction_key, package_id, model_kind, model_version, action, confidence, "
            "horizon_s, predicted_at) VALUES ('k', :p, :kind, 'v1', :action, :conf, :h, now())"
        ),
        {"p": package_id, "kind": kind, "action": action, "conf": confidence, "h": horizon},
    )


@pytest.mark.parametrize(
    "kwargs, constraint",
    [
        ({"horizon": -60}, "ck_predictions_positive_horizon"),
        ({"horizon": 0}, "ck_predictions_positive_horizon"),
        ({"kind": "lstm"}, "ck_predictions_known_model_kind"),
        ({"action": "buy"}, "ck_predictions_known_action"),
        ({"confidence": 1.2}, "ck_predictions_confidence_range"),
        ({"package_id": 999999}, "fk_predictions_package_id_input_packages"),
    ],
)
def test_bad_predictions_are_rejected(engine, kwargs, constraint):
    _rejected(engine, lambda c: _prediction(c, **kwargs), None, constraint)


def test_unknown_job_state_is_rejected(engine):
    _rejected(engine, "INSERT INTO jobs (kind, state) VALUES ('noop', 'paused')", {}, "ck_jobs_known_state")


def test_running_job_without_owner_is_rejected(engine):
    _rejected(engine, "INSERT INTO jobs (kind, state) VALUES ('noop', 'running')", {}, "ck_jobs_running_is_locked")


def test_validated_outcome_must_be_complete(engine):
    def insert(conn):
        _prediction(conn)
        pid = conn.execute(sa.text("SELECT id FROM predictions")).scalar()
        conn.execute(sa.text("INSERT INTO outcomes (prediction_id, status) VALUES (:p, 'validated')"), {"p": pid})

    _rejected(engine, insert, None, "ck_outcomes_validated_complete")


def test_exact_replay_needs_full_capture(engine):
    _rejected(
        engine,
        "INSERT INTO training_sessions (model_kind, model_name, seed, torch_version, trainsrv_version, "
        "device, capture_policy, replay_exact) VALUES ('cnn', 'm', 1, 't', 'v', 'cpu', 'half', true)",
        {},
        "ck_training_sessions_exact_needs_full_capture",
    )
