"""Labelled CNN episodes from a candle file: candles, packages (real windows), predictions, and
outcomes labelled by the outcome validator (``app.outcomes.validate``).

Tests and benchmarks build their episodes here from the shared real candles, through the same
ingest and validation code the server runs."""

from __future__ import annotations

import csv
import datetime as dt
import itertools
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from app.config import Settings
from app.ingest import package as ingest_package
from app.ingest.builder import resample
from app.outcomes.validate import validate_outcomes

SYMBOL = "BTC-PERP"
UTC = dt.UTC
WINDOWS = {"1m": 30, "5m": 12}
SMALL_MODEL = {"channels": 8, "hidden": 16, "kernel": 3, "dropout": 0.1}


def read_candles(path: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Open times (epoch s) and OHLCV rows of the first ``count`` real 1-minute candles."""
    with open(path, newline="") as f:
        rows = list(itertools.islice(csv.DictReader(f), count))
    t = np.array([int(dt.datetime.fromisoformat(r["timestamp"]).replace(tzinfo=UTC).timestamp()) for r in rows])
    bars = np.array([[float(r[k]) for k in ("open", "high", "low", "close", "volume")] for r in rows])
    return t, bars


def insert_candles(conn: sa.Connection, t: np.ndarray, bars: np.ndarray) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO candles (symbol, timeframe, ts, open, high, low, close, volume) "
            "VALUES (:s, '1m', to_timestamp(:ts), :o, :h, :l, :c, :v)"
        ),
        [{"s": SYMBOL, "ts": int(ts), "o": b[0], "h": b[1], "l": b[2], "c": b[3], "v": b[4]} for ts, b in zip(t, bars)],
    )


def package_at(t: np.ndarray, bars: np.ndarray, end: int) -> ingest_package.ModelInputPackage:
    """The package seen at the close of bar ``end - 1``: real 1m and resampled 5m windows."""
    end_s = int(t[end - 1]) + 60
    lo = max(0, end - 5 * WINDOWS["5m"] - 5)
    t5, b5 = resample(t[lo:end], bars[lo:end], 300, end_s)
    n1, n5 = WINDOWS["1m"], WINDOWS["5m"]
    return ingest_package.ModelInputPackage(
        symbol=SYMBOL,
        ts=dt.datetime.fromtimestamp(end_s, UTC),
        ohlcv={"1m": bars[end - n1 : end], "5m": b5[-n5:]},
        bar_ts={"1m": t[end - n1 : end], "5m": t5[-n5:]},
    )


def insert_package(conn: sa.Connection, pkg: ingest_package.ModelInputPackage, premium: bool = False) -> int:
    return conn.execute(
        sa.text(
            "INSERT INTO input_packages (symbol, ts, payload, payload_format, data_hash, completeness_score, "
            "is_valid, is_premium) VALUES (:s, :ts, :p, :f, :h, 1.0, true, :premium) RETURNING id"
        ),
        {
            "s": pkg.symbol,
            "ts": pkg.ts,
            "p": pkg.canonical_bytes(),
            "f": ingest_package.PAYLOAD_FORMAT,
            "h": pkg.data_hash,
            "premium": premium,
        },
    ).scalar_one()


def insert_prediction(conn: sa.Connection, package_id: int, at: dt.datetime, action: str, horizon_s: int) -> int:
    return conn.execute(
        sa.text(
            "INSERT INTO predictions (prediction_key, package_id, model_kind, model_version, action, confidence, "
            "horizon_s, predicted_at) VALUES (:k, :p, 'cnn', 'orchestrator-v1', :a, 0.6, :h, :at) RETURNING id"
        ),
        {"k": f"test-{package_id}-{action}", "p": package_id, "a": action, "h": horizon_s, "at": at},
    ).scalar_one()


def build_episodes(
    engine: sa.Engine, candles_path: Path, *, minutes: int = 1500, every: int = 3, horizon_s: int = 900
) -> int:
    """Real candles, a package every ``every`` minutes, a long and a short prediction on each,
    labelled by the outcome validator; returns the number of validated outcomes."""
    t, bars = read_candles(candles_path, minutes)
    with engine.begin() as conn:
        insert_candles(conn, t, bars)
        for end in range(5 * WINDOWS["5m"] + 5, minutes - horizon_s // 60 - 2, every):
            pkg = package_at(t, bars, end)
            pid = insert_package(conn, pkg, premium=end % 7 == 0)
            for action in ("long", "short"):
                insert_prediction(conn, pid, pkg.ts, action, horizon_s)
    as_of = dt.datetime.fromtimestamp(int(t[-1]) + 3600, UTC)
    return validate_outcomes(engine, Settings(), as_of=as_of).validated
