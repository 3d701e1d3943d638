"""The plain-SQL path an orchestrator in another language uses: same rules, same hash, same errors."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa

from app.client import rules_from_settings
from app.config import Settings
from app.ingest import ModelInputPackage, package_from_candles, timeframes
from tests.ingest.conftest import SYMBOL, T0, table_state


@pytest.fixture
def raw(candle_engine):
    """A plain psycopg connection, as a non-Python orchestrator would hold (autocommit)."""
    url = candle_engine.url.set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def hand_written(candle_engine):
    """A package document written by hand, spelled differently from the Python client's."""
    with candle_engine.connect() as conn:
        package = package_from_candles(conn, SYMBOL, T0 + dt.timedelta(days=9))
    doc = package.to_document()
    doc["ts"] = package.ts.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat()  # same instant, +02:00
    del doc["windows"]  # optional: declared from the actual lengths
    return package, json.dumps(doc, indent=1)


def test_sql_record_matches_the_python_client(raw, hand_written, client):
    package, text = hand_written
    row = raw.execute(
        "SELECT * FROM ingest_record(%s::jsonb, %s::jsonb)",
        (
            text,
            json.dumps(
                {"model_kind": "rl", "model_version": "go-1.2", "action": "hold", "confidence": 0.4, "horizon_s": 900}
            ),
        ),
    ).fetchone()
    package_id, prediction_id, is_valid, flags, package_created, prediction_created = row
    assert is_valid and package_created and prediction_created and all(flags.values())
    result = client.insert_package(package)
    assert (result.package_id, result.created, result.data_hash) == (package_id, False, package.data_hash)
    again = raw.execute(
        "SELECT * FROM ingest_record(%s::jsonb, %s::jsonb)",
        (
            text,
            json.dumps(
                {"model_kind": "rl", "model_version": "go-1.2", "action": "hold", "confidence": 0.4, "horizon_s": 900}
            ),
        ),
    ).fetchone()
    assert again[:2] == (package_id, prediction_id) and again[4:] == (False, False)


def test_sql_prediction_by_package_hash(raw, hand_written, client):
    package, _ = hand_written
    client.insert_package(package)
    row = raw.execute(
        "SELECT * FROM ingest_prediction(%s::jsonb)",
        (
            json.dumps(
                {
                    "package_hash": package.data_hash.hex(),
                    "model_kind": "other",
                    "model_version": "x",
                    "action": "short",
                    "confidence": 1,
                    "horizon_s": 60,
                    "predicted_at": "2022-01-19T12:00:30Z",
                    "prediction_key": "ext-1",
                }
            ),
        ),
    ).fetchone()
    assert row[1] is True


@pytest.mark.parametrize(
    "doc_change, field",
    [
        ({"ohlcv": {"1m": {"t": [1, 2], "bars": [[1, 2, 0.5, 1, 1], [1, 2, 0.5, 1]]}}}, "ohlcv.1m.bars"),
        ({"ohlcv": {"1m": {"t": [1], "bars": [[1, "abc", 0.5, 1, 1]]}}}, "ohlcv.1m.bars"),
        ({"ohlcv": {"1m": {"t": [1], "bars": [[1, 2, 0.5, 1, "BIG"]]}}}, "ohlcv.1m.bars"),
        ({"ohlcv": {"1m": {"t": [1, 2], "bars": [[1, 2, 0.5, 1, 1]]}}}, "ohlcv.1m"),
        ({"ohlcv": {"1m": {"t": ["NaN"], "bars": [[1, 2, 0.5, 1, 1]]}}}, "ohlcv.1m.t"),
        ({"ohlcv": {"minute": {"t": [], "bars": []}}}, "ohlcv.minute"),
        ({"features": {"rsi": [1, [2]]}}, "features.rsi"),
        ({"features": {"rsi": "50"}}, "features.rsi"),
        ({"orderbook": [[1, 2], [3]]}, "orderbook"),
        ({"hidden_state": {"h": 1}}, "hidden_state"),
        ({"windows": {"1m": 0}}, "windows.1m"),
        ({"ts": "2022-01-01 00:00:00"}, "ts"),
        ({"ts": 1641000000}, "ts"),
        ({"symbol": 42}, "symbol"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_sql_structure_errors_name_the_field(raw, candle_engine, doc_change, field):
    doc = {"symbol": "X", "ts": "2022-01-01T00:00:00Z", **doc_change}
    before = table_state(candle_engine)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
        # "BIG" stands for a number no float64 can hold (json.dumps cannot write one).
        raw.execute("SELECT * FROM ingest_package(%s::jsonb)", (json.dumps(doc).replace('"BIG"', "1e400"),))
    assert info.value.diag.column_name == field
    assert info.value.diag.message_primary.startswith(field + ": ")
    assert table_state(candle_engine) == before


def test_payload_limit_applies_on_the_sql_path(raw):
    doc = {"symbol": "X", "ts": "2022-01-01T00:00:00Z", "metadata": {"blob": "x" * 5000}}
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="over the limit"):
        raw.execute(
            "SELECT * FROM ingest_package(%s::jsonb, %s::jsonb)",
            (json.dumps(doc), json.dumps({"max_payload_bytes": 4096})),
        )


def test_sql_defaults_equal_the_settings_defaults(raw):
    stored = raw.execute("SELECT ingest_default_rules()").fetchone()[0]
    assert stored == json.loads(json.dumps(rules_from_settings(Settings())))


def test_timeframe_rule_is_the_same_in_sql_and_python(raw):
    for label in ("1s", "1m", "5m", "15m", "1h", "4h", "1d", "1w", "90m"):
        assert raw.execute("SELECT ingest_timeframe_s(%s)", (label,)).fetchone()[0] == timeframes.seconds(label)
    for label in ("0m", "m", "1y", "1.5h"):
        assert raw.execute("SELECT ingest_timeframe_s(%s)", (label,)).fetchone()[0] is None


def test_embedding_is_a_documented_32_dim_summary(client, candle_engine):
    with candle_engine.connect() as conn:
        package = package_from_candles(conn, SYMBOL, T0 + dt.timedelta(days=11))
    package_id = client.insert_package(package).package_id
    with candle_engine.connect() as conn:
        text = conn.execute(
            sa.text("SELECT embedding::text FROM input_packages WHERE id = :i"), {"i": package_id}
        ).scalar()
    emb = [float(x) for x in text.strip("[]").split(",")]
    assert len(emb) == 32 and all(-5 <= x <= 5 for x in emb)
    closes = package.ohlcv["1m"][:, 3]
    r = np.diff(np.log(closes))
    assert emb[0] == pytest.approx(max(-5, min(5, r[-1] / r.std())), rel=1e-5)  # newest 1m return / std
    lo, hi = package.ohlcv["1h"][:, 2].min(), package.ohlcv["1h"][:, 1].max()
    assert emb[24 + 6] == pytest.approx(2 * (package.ohlcv["1h"][-1, 3] - lo) / (hi - lo) - 1, rel=1e-5)


def test_stored_documents_decode_as_packages(candle_engine, hand_written, client):
    package, _ = hand_written
    client.insert_package(package)
    with candle_engine.connect() as conn:
        payload = conn.execute(
            sa.text("SELECT payload FROM input_packages WHERE data_hash = :h"), {"h": package.data_hash}
        ).scalar()
    assert ModelInputPackage.from_document(json.loads(bytes(payload))).identical(package)
