"""Bulk package ingest (set-based ``ingest_packages``) against the one-document path
(``ingest_package``): the same rows, the same verdicts, duplicates, parallel connections, and
the extreme inputs that the set-based statement must not trip over."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa

from app.client import Client
from app.ingest import ModelInputPackage, package_from_candles
from tests.ingest.conftest import SYMBOL, T0, table_state

STORED = (
    "symbol, ts, payload, payload_format, data_hash, completeness_score, validation_flags, is_valid, "
    "embedding::text, metadata"
)


@pytest.fixture(scope="module")
def packages(candle_engine) -> list[ModelInputPackage]:
    with candle_engine.connect() as conn:
        return [package_from_candles(conn, SYMBOL, T0 + dt.timedelta(days=14, minutes=7 * i)) for i in range(6)]


def _with(package: ModelInputPackage, tf: str, row: int, col: int, value: float, **changes) -> ModelInputPackage:
    bars = package.ohlcv[tf].copy()
    bars[row, col] = value
    return dataclasses.replace(package, ohlcv={**package.ohlcv, tf: bars}, **changes)


def _mixed(packages: list[ModelInputPackage]) -> list[ModelInputPackage]:
    """Valid packages, invalid ones of several kinds, and a repeat."""
    p = packages
    return [
        p[0],
        p[1],
        _with(p[2], "5m", 3, 1, np.nan),  # arrays_finite
        _with(p[3], "1m", 10, 2, p[3].ohlcv["1m"][10, 1] + 5),  # ohlc_consistent
        _with(p[4], "1h", 0, 4, -1.0),  # volume_non_negative
        _with(p[5], "1m", 30, 3, np.inf),  # a close of +inf: invalid, not an error
        dataclasses.replace(p[0], features={k: v for k, v in p[0].features.items() if k == "rsi_14"}),
        p[1],  # a repeat inside the batch
    ]


def _stored_rows(conn, hashes: list[bytes]) -> list[tuple]:
    rows = conn.execute(f"SELECT {STORED} FROM input_packages WHERE data_hash = ANY(%s)", (hashes,)).fetchall()
    return sorted(rows, key=lambda r: r[4])


def test_bulk_and_single_paths_store_identical_rows(candle_engine, packages):
    docs = [p.to_json() for p in _mixed(packages)]
    url = candle_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as conn:
        bulk = conn.execute(
            "SELECT ord, package_id, data_hash, is_valid, validation_flags, created "
            "FROM ingest_packages(%s::jsonb[]) ORDER BY ord",
            (docs,),
        ).fetchall()
        hashes = [r[2] for r in bulk]
        bulk_rows = _stored_rows(conn, hashes)
        conn.rollback()
        single = [
            conn.execute(
                "SELECT package_id, data_hash, is_valid, validation_flags, created FROM ingest_package(%s::jsonb)", (d,)
            ).fetchone()
            for d in docs
        ]
        single_rows = _stored_rows(conn, hashes)
        conn.rollback()
    assert [r[0] for r in bulk] == list(range(1, len(docs) + 1))
    assert [r[2:] for r in bulk] == [r[1:] for r in single]  # hash, verdict, created, in input order
    assert bulk_rows == single_rows and len(bulk_rows) == len(docs) - 1
    assert [r[3] for r in bulk] == [True, True, False, False, False, False, False, True]
    assert bulk[7][1] == bulk[1][1] and bulk[1][5] and not bulk[7][5]  # the repeat gets the first's row


@pytest.mark.parametrize("connections", [1, 2])
def test_client_bulk_on_one_or_two_connections(candle_engine, packages, connections):
    batch = [dataclasses.replace(p, metadata={"connections": connections}) for p in _mixed(packages)]
    with Client(candle_engine) as client:
        results = client.insert_packages(batch, batch_size=3, connections=connections)
        assert [r.data_hash for r in results] == [p.data_hash for p in batch]
        # The repeat (index 7) and its first occurrence share one row; on two connections either
        # batch may store it first, so exactly one of the two reports created.
        assert sum(r.created for r in results) == 7 and results[1].created != results[7].created
        assert results[1].package_id == results[7].package_id
        assert results[5].failed_checks == ["arrays_finite"]
        again = client.insert_packages(batch[::-1], batch_size=2, connections=connections)
    assert [r.package_id for r in again] == [r.package_id for r in results][::-1]
    assert not any(r.created for r in again)


def test_a_bad_document_refuses_its_whole_batch(candle_engine, packages):
    good = [dataclasses.replace(p, metadata={"batch": "refused"}) for p in packages[:3]]
    before = table_state(candle_engine)
    doc = json.loads(good[2].to_json())
    doc["ohlcv"]["1m"]["bars"][4][2] = "TINY"
    bad = json.dumps(doc).replace('"TINY"', "1e-400")  # no float64 holds it
    url = candle_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue) as info:
            conn.execute("SELECT * FROM ingest_packages(%s::jsonb[])", ([good[0].to_json(), good[1].to_json(), bad],))
    assert info.value.diag.column_name == "ohlcv.1m.bars"
    assert table_state(candle_engine) == before


def test_extreme_but_finite_prices_are_judged_not_errors(client, packages):
    # Quotients of such prices overflow float64; the assessment must not divide them.
    huge = _with(packages[0], "1m", 59, 3, 1e308, metadata={"extreme": "huge"})
    tiny = _with(packages[1], "15m", 0, 2, 5e-324, metadata={"extreme": "tiny"})
    assert client.insert_package(huge).failed_checks == ["ohlc_consistent"]
    assert client.insert_package(tiny).failed_checks == []  # low of 5e-324 is still > 0 and <= open, close
    with client.engine.connect() as conn:
        emb = conn.execute(
            sa.text("SELECT embedding IS NOT NULL FROM input_packages WHERE data_hash = :h"), {"h": tiny.data_hash}
        ).scalar()
    assert emb


def test_a_failing_batch_stops_the_load_and_a_retry_completes_it(candle_engine, packages):
    from app.config import Settings
    from app.errors import ValidationError

    batch = [dataclasses.replace(p, metadata={"retry": True}) for p in packages]
    batch[4] = dataclasses.replace(batch[4], hidden_state=np.ones(10_000))  # over the small limit below
    with Client(candle_engine, Settings(max_payload_bytes=40_000)) as strict:
        with pytest.raises(ValidationError) as info:
            strict.insert_packages(batch, batch_size=2, connections=2)
    assert info.value.field == "package" and "over the limit" in info.value.problem
    with Client(candle_engine) as client:
        results = client.insert_packages(batch, batch_size=2, connections=2)
    assert [r.data_hash for r in results] == [p.data_hash for p in batch]
    assert results[4].created and all(r.is_valid for r in results)
