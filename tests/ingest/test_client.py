"""The Python client: atomic record, idempotent retries, bulk ingest, and every bad input.

Each bad input either raises ValidationError naming the field (nothing stored changes) or is
stored as invalid with the named check that failed — see docs/ingest.md for which is which."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pytest
import sqlalchemy as sa

from app.client import Client, Prediction
from app.config import Settings
from app.errors import ValidationError
from app.ingest import ModelInputPackage, package_from_candles
from tests.ingest.conftest import SYMBOL, T0, table_state

CNN = Prediction(
    model_kind="cnn", model_version="v1", action="long", confidence=0.7, horizon_s=300, predicted_move=0.004
)


@pytest.fixture(scope="module")
def real_package(candle_engine) -> ModelInputPackage:
    with candle_engine.connect() as conn:
        return package_from_candles(conn, SYMBOL, T0 + dt.timedelta(days=2))


def _variant(package: ModelInputPackage, **changes) -> ModelInputPackage:
    fields = {f.name: getattr(package, f.name) for f in dataclasses.fields(package)}
    copy = {
        k: ({tf: a.copy() for tf, a in v.items()} if k in ("ohlcv", "bar_ts", "features") else v)
        for k, v in fields.items()
    }
    return ModelInputPackage(**{**copy, **changes})


def _stored_invalid(client, package, failed):
    result = client.insert_package(package)
    assert result.created and not result.is_valid
    assert result.failed_checks == failed
    with client.engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT is_valid, embedding FROM input_packages WHERE id = :i"), {"i": result.package_id}
        ).one()
    assert row.is_valid is False and row.embedding is None  # invalid packages are not searchable
    return result


def test_record_is_atomic_and_idempotent(client, real_package, candle_engine):
    before = table_state(candle_engine)
    ids = client.record(real_package, CNN)
    assert client.record(real_package, CNN) == ids
    assert client.record(_variant(real_package), dataclasses.replace(CNN)) == ids
    after = table_state(candle_engine)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    with candle_engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT p.package_id, p.predicted_at, i.ts, p.model_kind, p.horizon_s "
                "FROM predictions p JOIN input_packages i ON i.id = p.package_id "
                "WHERE p.id = :i"
            ),
            {"i": ids[1]},
        ).one()
    assert row.package_id == ids[0] and row.predicted_at == row.ts and (row.model_kind, row.horizon_s) == ("cnn", 300)


def test_a_second_model_on_the_same_package_is_a_new_prediction(client, real_package):
    package_id, first = client.record(real_package, CNN)
    _, second = client.record(real_package, dataclasses.replace(CNN, model_kind="rl", action="short"))
    assert second != first
    assert client.insert_prediction(CNN, package_id=package_id) == first


def test_same_key_with_different_values_is_refused(client, real_package, candle_engine):
    client.record(real_package, CNN)
    before = table_state(candle_engine)
    with pytest.raises(ValidationError) as info:
        client.record(real_package, dataclasses.replace(CNN, action="short"))
    assert info.value.field == "prediction_key" and "different values" in info.value.problem
    assert table_state(candle_engine) == before


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(model_kind="transformer"), "model_kind"),
        (dict(action="buy"), "action"),
        (dict(horizon_s=0), "horizon_s"),
        (dict(horizon_s=-60), "horizon_s"),
        (dict(horizon_s=1.5), "horizon_s"),
        (dict(confidence="high"), "confidence"),
        (dict(confidence=1.5), "confidence"),
        (dict(confidence=float("nan")), "confidence"),
        (dict(predicted_move="up"), "predicted_move"),
        (dict(model_version=""), "model_version"),
        (dict(predicted_at=dt.datetime(2021, 1, 1, tzinfo=dt.UTC)), "predicted_at"),
        (dict(predicted_at=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)), "predicted_at"),
    ],
)
def test_bad_predictions_name_the_field_and_store_nothing(client, real_package, candle_engine, change, field):
    package = _variant(real_package, metadata={"case": field + str(change)})  # a package not stored yet
    before = table_state(candle_engine)
    with pytest.raises(ValidationError) as info:
        client.record(package, dataclasses.replace(CNN, **change))
    assert info.value.field == field
    assert table_state(candle_engine) == before  # the package of the failed record is not kept either


def test_prediction_on_a_package_that_does_not_exist(client, candle_engine):
    before = table_state(candle_engine)
    with pytest.raises(ValidationError) as info:
        client.insert_prediction(CNN, package_id=987654321)
    assert info.value.field == "package_id" and "no input package" in info.value.problem
    assert table_state(candle_engine) == before


def test_nan_and_inf_in_arrays_are_stored_invalid(client, real_package):
    bars = real_package.ohlcv["5m"].copy()
    bars[3, 1] = np.nan
    features = dict(real_package.features, rsi_14=np.where(np.arange(60) == 7, np.inf, real_package.features["rsi_14"]))
    _stored_invalid(client, _variant(real_package, ohlcv={**real_package.ohlcv, "5m": bars}), ["arrays_finite"])
    result = _stored_invalid(client, _variant(real_package, features=features), ["arrays_finite"])
    back = client.load_package(result.package_id)
    assert np.isinf(back.features["rsi_14"][7]) and back.identical(_variant(real_package, features=features))


def test_high_below_low_and_negative_volume_are_stored_invalid(client, real_package):
    bars = real_package.ohlcv["1m"].copy()
    bars[10, 1], bars[10, 2] = bars[10, 2] - 1, bars[10, 1] + 1
    _stored_invalid(client, _variant(real_package, ohlcv={**real_package.ohlcv, "1m": bars}), ["ohlc_consistent"])
    bars = real_package.ohlcv["1h"].copy()
    bars[0, 4] = -1.0
    _stored_invalid(client, _variant(real_package, ohlcv={**real_package.ohlcv, "1h": bars}), ["volume_non_negative"])


def test_timestamps_out_of_order_in_the_future_or_after_ts_are_stored_invalid(client, real_package):
    times = real_package.bar_ts["1m"].copy()
    times[[5, 6]] = times[[6, 5]]
    _stored_invalid(
        client,
        _variant(real_package, bar_ts={**real_package.bar_ts, "1m": times}),
        ["windows_contiguous", "windows_monotonic"],
    )
    gap = real_package.bar_ts["1m"].copy()
    gap[:10] -= 60
    _stored_invalid(client, _variant(real_package, bar_ts={**real_package.bar_ts, "1m": gap}), ["windows_contiguous"])
    late = _variant(real_package, ts=real_package.ts - dt.timedelta(minutes=5))
    _stored_invalid(client, late, ["windows_closed_by_ts"])
    future = {tf: t + 10 * 365 * 86400 for tf, t in real_package.bar_ts.items()}
    _stored_invalid(
        client,
        _variant(real_package, ts=real_package.ts + dt.timedelta(days=3650), bar_ts=future),
        ["timestamp_not_future"],
    )


def test_missing_required_fields_and_short_windows(client, real_package):
    few = {k: v for k, v in real_package.features.items() if k == "rsi_14"}
    result = _stored_invalid(client, _variant(real_package, features=few), ["complete_enough"])
    assert result.completeness_score == pytest.approx(0.5)
    short = {**real_package.ohlcv, "1m": real_package.ohlcv["1m"][-50:]}
    short_ts = {**real_package.bar_ts, "1m": real_package.bar_ts["1m"][-50:]}
    _stored_invalid(client, _variant(real_package, ohlcv=short, bar_ts=short_ts), ["windows_match_declared"])


def test_completeness_threshold_comes_from_settings(candle_engine, real_package):
    few = {k: v for k, v in real_package.features.items() if k in ("rsi_14", "returns_1m", "volatility_20")}
    with Client(candle_engine, Settings(min_data_completeness=0.7)) as lenient:
        result = lenient.insert_package(_variant(real_package, features=few, metadata={"lenient": True}))
    assert result.completeness_score == pytest.approx(0.7) and result.is_valid


def test_wrong_shapes_and_strings_are_refused_before_sending(client, real_package):
    with pytest.raises(ValidationError) as info:
        _variant(real_package, ohlcv={**real_package.ohlcv, "1m": real_package.ohlcv["1m"][:, :4]})
    assert info.value.field == "ohlcv.1m"
    with pytest.raises(ValidationError) as info:
        _variant(real_package, features={"rsi_14": ["overbought"] * 60})
    assert info.value.field == "features.rsi_14"


def test_a_50_mb_payload_is_refused(client, real_package, candle_engine):
    before = table_state(candle_engine)
    huge = _variant(real_package, hidden_state=np.full(10_000_000, 0.123456789))
    with pytest.raises(ValidationError) as info:
        client.insert_package(huge)
    assert info.value.field == "package" and "over the limit" in info.value.problem
    assert table_state(candle_engine) == before


def test_bulk_insert_keeps_order_and_is_idempotent(client, candle_engine):
    with candle_engine.connect() as conn:
        packages = [package_from_candles(conn, SYMBOL, T0 + dt.timedelta(days=5, minutes=i)) for i in range(30)]
    first = client.insert_packages(packages, batch_size=8)
    assert [r.data_hash for r in first] == [p.data_hash for p in packages]
    assert all(r.created and r.is_valid for r in first)
    again = client.insert_packages(packages[::-1], batch_size=50)
    assert [r.package_id for r in again] == [r.package_id for r in first][::-1]
    assert not any(r.created for r in again)


def test_client_survives_a_dropped_connection(client, real_package, candle_engine):
    ids = client.record(real_package, CNN)
    with candle_engine.connect() as conn:
        pid = client._connection().info.backend_pid
        conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    assert client.record(real_package, CNN) == ids
