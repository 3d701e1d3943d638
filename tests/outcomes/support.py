"""Test data through the orchestrator's write path: real candles via ``ingest_candles``, packages
built from them with ``package_from_candles`` and recorded with the ``Client``."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
from pathlib import Path

import sqlalchemy as sa

from app.client import Client, Prediction
from app.ingest import ingest_candles, package_from_candles

SYMBOL = "BTC-PERP"
UTC = dt.UTC
COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
_versions = itertools.count()


def read_candles(path: Path, start: int = 0, count: int | None = None) -> list[tuple]:
    """Rows (ts, open, high, low, close, volume) of the real CSV, from row ``start``."""
    with open(path, newline="") as f:
        rows = itertools.islice(csv.DictReader(f), start, None if count is None else start + count)
        return [
            (
                dt.datetime.fromisoformat(r["timestamp"]).replace(tzinfo=UTC),
                float(r["open"]),
                float(r["high"]),
                float(r["low"]),
                float(r["close"]),
                float(r["volume"]),
            )
            for r in rows
        ]


def insert_candles(engine: sa.Engine, rows: list[tuple], symbol: str = SYMBOL, timeframe: str = "1m") -> None:
    """Load ``rows`` (ts, open, high, low, close, volume) with the ingest path."""
    report = ingest_candles(engine, dict(zip(COLUMNS, zip(*rows))), symbol, timeframe, progress=False)
    assert report.rejected == 0, report.to_dict()


def record(
    engine: sa.Engine,
    at: dt.datetime,
    horizon_s: int,
    action: str,
    *,
    symbol: str = SYMBOL,
    model_kind: str = "cnn",
    model_version: str = "v1",
) -> int:
    """A package built from the candles at ``at`` and a prediction on it; returns the prediction id."""
    with engine.connect() as conn:
        package = package_from_candles(conn, symbol, at, metadata={"test": next(_versions)})
    with Client(engine) as client:
        _, prediction_id = client.record(
            package,
            Prediction(
                model_kind=model_kind,
                model_version=model_version,
                action=action,
                confidence=0.7,
                horizon_s=horizon_s,
                predicted_at=at,
            ),
        )
    return prediction_id


def predict(
    engine: sa.Engine,
    package_id: int,
    at: dt.datetime,
    horizon_s: int,
    action: str,
    *,
    model_kind: str = "cnn",
    model_version: str = "v1",
) -> int:
    """A prediction made at ``at`` from an already stored package; returns its id."""
    with Client(engine) as client:
        return client.insert_prediction(
            Prediction(
                model_kind=model_kind,
                model_version=model_version,
                action=action,
                confidence=0.7,
                horizon_s=horizon_s,
                predicted_at=at,
            ),
            package_id=package_id,
        )


def package_at(engine: sa.Engine, at: dt.datetime, symbol: str = SYMBOL) -> int:
    """Store the package built from the candles at ``at``; returns its id."""
    with engine.connect() as conn:
        package = package_from_candles(conn, symbol, at, metadata={"test": next(_versions)})
    with Client(engine) as client:
        return client.insert_package(package).package_id


def outcome(conn: sa.Connection, prediction_id: int) -> dict | None:
    row = conn.execute(sa.text("SELECT * FROM outcomes WHERE prediction_id = :id"), {"id": prediction_id})
    found = row.mappings().one_or_none()
    return dict(found) if found else None
