"""Fixtures of the ingest tests: a module database holding the real BTC-PERP candles."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from app.client import Client
from app.db.engine import make_engine
from app.ingest import ingest_candles

SYMBOL = "BTC-PERP"
# A time well inside the real data (2021-12-31 23:01 .. 2022-02-01 05:31 UTC).
T0 = dt.datetime(2022, 1, 10, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def candle_engine(module_db_url, real_candles_path):
    """An engine on a module database with the shared real candles loaded."""
    engine = make_engine(module_db_url)
    report = ingest_candles(engine, real_candles_path, SYMBOL, "1m", progress=False)
    assert report.loaded == 45031
    yield engine
    engine.dispose()


@pytest.fixture
def client(candle_engine):
    with Client(candle_engine) as c:
        yield c


def table_state(engine: sa.Engine) -> tuple:
    """Row counts and a content digest of the ingest tables, to prove nothing changed."""
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT (SELECT count(*) FROM input_packages), (SELECT count(*) FROM predictions), "
                "(SELECT md5(coalesce(string_agg(encode(data_hash, 'hex') || is_valid::text, ',' ORDER BY id), '')) "
                "   FROM input_packages), "
                "(SELECT md5(coalesce(string_agg(prediction_key || action || confidence::text, ',' ORDER BY id), '')) "
                "   FROM predictions)"
            )
        ).one()
