"""Packages: canonical encoding equals the database's, bit-for-bit round trip, tamper detection,
no look-ahead when built from candles."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import ValidationError
from app.ingest import (
    ModelInputPackage,
    PackageTampered,
    load_package,
    load_packages,
    package_from_candles,
    resample,
    timeframes,
)
from tests.ingest.conftest import SYMBOL, T0

UTC = dt.UTC


def _db_canonical(conn, package: ModelInputPackage) -> bytes:
    return bytes(
        conn.execute(
            sa.text("SELECT convert_to(ingest_normalise(CAST(:d AS jsonb))::text, 'UTF8')"), {"d": package.to_json()}
        ).scalar()
    )


def _small(values, metadata=None) -> ModelInputPackage:
    bars = np.array([[10.0, 11.0, 9.0, 10.5, 1.0], [10.5, 12.0, 10.0, 11.0, 2.0]])
    return ModelInputPackage(
        symbol="X",
        ts=dt.datetime(2022, 1, 1, 0, 5, tzinfo=UTC),
        ohlcv={"1m": bars},
        bar_ts={"1m": np.array([1640995260, 1640995320])},
        features={"f": np.asarray(values, dtype=np.float64)},
        metadata=metadata or {},
    )


def test_canonical_encoding_matches_postgres_for_awkward_values(candle_engine):
    package = _small(
        [1e-7, 1.5e16, -0.0, 0.1, 1 / 3, 5e-324, 1.7976931348623157e308, np.nan, np.inf, -np.inf],
        metadata={
            "note": 'quote " slash \\ tab \t nl \n é ✓ \x01',
            "n": [1, 2.5, None, True],
            "nested": {"bb": 1, "a": 2, "ccc": {}},
        },
    )
    with candle_engine.connect() as conn:
        assert _db_canonical(conn, package) == package.canonical_bytes()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=30))
def test_canonical_encoding_matches_postgres_for_any_floats(candle_engine, values):
    package = _small(values)
    with candle_engine.connect() as conn:
        assert _db_canonical(conn, package) == package.canonical_bytes()
    back = ModelInputPackage.from_document(__import__("json").loads(package.canonical_bytes()))
    # Bit-exact, except that -0.0 is stored as 0.0 (numeric has no negative zero).
    assert np.array_equal(back.features["f"], np.asarray(values) + 0.0, equal_nan=True)


def test_real_package_round_trips_bit_for_bit_with_verified_hash(client, candle_engine):
    with candle_engine.connect() as conn:
        package = package_from_candles(
            conn, SYMBOL, T0, orderbook=np.arange(20.0).reshape(10, 2), hidden_state=np.linspace(-1, 1, 7)
        )
    result = client.insert_package(package)
    assert result.is_valid and result.created and result.data_hash == package.data_hash
    with candle_engine.connect() as conn:
        back = load_package(conn, result.package_id)
        stored = conn.execute(
            sa.text("SELECT symbol, ts, completeness_score, embedding IS NOT NULL FROM input_packages WHERE id = :i"),
            {"i": result.package_id},
        ).one()
    assert back.identical(package)
    assert back.ohlcv["1m"].dtype == np.float64 and back.ohlcv["1m"].shape == (60, 5)
    assert tuple(stored) == (SYMBOL, T0, 1.0, True)


def test_tampering_is_detected_on_read(client, candle_engine):
    with candle_engine.connect() as conn:
        package = package_from_candles(conn, SYMBOL, T0 + dt.timedelta(hours=3))
    package_id = client.insert_package(package).package_id
    with candle_engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE input_packages SET payload = replace(convert_from(payload, 'UTF8'), "
                "'\"rsi_14\"', '\"rsi_15\"')::bytea WHERE id = :i"
            ),
            {"i": package_id},
        )
    with candle_engine.connect() as conn:
        with pytest.raises(PackageTampered, match=str(package_id)):
            load_package(conn, package_id)
        with pytest.raises(PackageTampered):
            load_packages(conn, [package_id])


def test_package_from_candles_has_the_promised_shapes_and_no_look_ahead(candle_engine):
    with candle_engine.connect() as conn:
        package = package_from_candles(conn, SYMBOL, T0)
    t0 = int(T0.timestamp())
    assert {tf: a.shape for tf, a in package.ohlcv.items()} == {
        "1m": (60, 5),
        "5m": (24, 5),
        "15m": (16, 5),
        "1h": (12, 5),
    }
    for tf, times in package.bar_ts.items():
        step = timeframes.seconds(tf)
        assert times[-1] + step == t0  # the newest bar closed exactly at ts
        assert np.all(np.diff(times) == step)
    assert set(package.features) == {"returns_1m", "rsi_14", "ema_ratio_12_26", "volatility_20", "volume_z_20"}
    assert all(f.shape == (60,) and np.isfinite(f).all() for f in package.features.values())

    # A candle stored later for a time after ts changes nothing in the package.
    with candle_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE candles SET close = high WHERE symbol = :s AND ts >= :t AND ts < :t2"),
            {"s": SYMBOL, "t": T0, "t2": T0 + dt.timedelta(hours=1)},
        )
        again = package_from_candles(conn, SYMBOL, T0)
        conn.rollback()
    assert again.identical(package)


def test_resampled_bars_match_sql_aggregation(candle_engine):
    with candle_engine.connect() as conn:
        package = package_from_candles(conn, SYMBOL, T0)
        rows = conn.execute(
            sa.text(
                "SELECT extract(epoch FROM b)::bigint, (array_agg(open ORDER BY ts))[1], max(high), min(low), "
                "(array_agg(close ORDER BY ts DESC))[1], sum(volume) FROM ("
                "  SELECT date_bin('15 minutes', ts, 'epoch') AS b, * FROM candles "
                "  WHERE symbol = :s AND ts >= :t - interval '4 hours' AND ts < :t) s GROUP BY b ORDER BY b"
            ),
            {"s": SYMBOL, "t": T0},
        ).all()
    expected = np.array([r[1:] for r in rows])
    assert np.array_equal(package.bar_ts["15m"], np.array([r[0] for r in rows]))
    assert np.allclose(package.ohlcv["15m"], expected, rtol=1e-12)


def test_resample_drops_the_bucket_still_open_at_ts():
    t = np.arange(0, 600, 60)
    bars = np.column_stack([np.arange(10.0), np.arange(10.0) + 1, np.arange(10.0) - 1, np.arange(10.0), np.ones(10)])
    times, out = resample(t, bars, 300, end_s=540)  # second bucket [300, 600) not closed by 540
    assert times.tolist() == [0] and out.tolist() == [[0.0, 5.0, -1.0, 4.0, 5.0]]


def test_structure_errors_name_the_field():
    good = dict(
        symbol="X",
        ts=dt.datetime(2022, 1, 1, tzinfo=UTC),
        ohlcv={"1m": np.ones((2, 5))},
        bar_ts={"1m": np.array([0, 60])},
    )
    cases = [
        ({"ohlcv": {"1m": np.ones((2, 4))}}, "ohlcv.1m"),
        ({"ohlcv": {"1m": [[1, 1, 1, 1, "a"], [1, 1, 1, 1, 1]]}}, "ohlcv.1m"),
        ({"features": {"rsi": ["high"]}}, "features.rsi"),
        ({"features": {"rsi": "0.5"}}, "features.rsi"),
        ({"ts": dt.datetime(2022, 1, 1)}, "ts"),
        ({"symbol": ""}, "symbol"),
        ({"bar_ts": {"1m": np.array([0.5, 60.0])}}, "bar_ts.1m"),
        ({"ohlcv": {"1x": np.ones((2, 5))}, "bar_ts": {"1x": np.array([0, 60])}}, "ohlcv.1x"),
        ({"metadata": {"x": float("nan")}}, "metadata"),
        ({"windows": {"1m": 0}}, "windows.1m"),
    ]
    for change, field in cases:
        with pytest.raises(ValidationError) as info:
            ModelInputPackage(**{**good, **change})
        assert info.value.field == field, change
