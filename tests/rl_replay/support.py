"""Experiences for the RL tests.

``real_experiences`` goes through the whole product path: real BTC-PERP candles ingested, a
package built from them every few minutes and recorded with an RL model's call (a simple
momentum rule, so actions and outcomes vary), outcomes validated, transitions built.
``small_replay`` writes a handful of experiences with chosen priorities directly (packages are
minimal rows): the sampling distribution depends only on priorities, classes and validity.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import itertools
from pathlib import Path

import sqlalchemy as sa

from app.client import Client, Prediction
from app.config import Settings
from app.experiences.build import build_experiences
from app.ingest import ingest_candles, package_from_candles
from app.outcomes.validate import validate_outcomes

SYMBOL = "BTC-PERP"
UTC = dt.UTC
COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
LATER = dt.datetime(2030, 1, 1, tzinfo=UTC)
SETTINGS = Settings(experience_max_gap_s=900)
_hashes = itertools.count()


def read_candles(path: Path, start: int, count: int) -> list[tuple]:
    with open(path, newline="") as f:
        rows = itertools.islice(csv.DictReader(f), start, start + count)
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


def real_experiences(
    engine: sa.Engine, path: Path, *, candles: int = 1700, every_min: int = 5, horizon_s: int = 300
) -> list[int]:
    """Experiences built from real candles through ingest, client, outcomes and the builder."""
    rows = read_candles(path, 0, candles)
    report = ingest_candles(engine, dict(zip(COLUMNS, zip(*rows))), SYMBOL, "1m", progress=False)
    assert report.rejected == 0
    closes = {r[0]: r[4] for r in rows}
    first = rows[0][0] + dt.timedelta(hours=13)  # full windows: 12 one-hour bars plus warm-up
    stamps = [
        first + dt.timedelta(minutes=every_min * i)
        for i in range(int((rows[-1][0] - first).total_seconds() // 60 - horizon_s // 60) // every_min)
    ]
    with Client(engine) as client:
        for at in stamps:
            with engine.connect() as conn:
                package = package_from_candles(conn, SYMBOL, at)
            client.record(
                package,
                Prediction(
                    model_kind="rl",
                    model_version="momentum-v1",
                    action=_momentum(closes, at),
                    confidence=0.6,
                    horizon_s=horizon_s,
                    predicted_at=at,
                ),
            )
    validate_outcomes(engine, SETTINGS, as_of=LATER)
    build_experiences(engine, SETTINGS, as_of=LATER)
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(sa.text("SELECT id FROM experiences ORDER BY id"))]


def _momentum(closes: dict, at: dt.datetime) -> str:
    now, before = closes.get(at - dt.timedelta(minutes=1)), closes.get(at - dt.timedelta(minutes=16))
    if now is None or before is None or abs(now / before - 1) < 0.0005:
        return "hold"
    return "long" if now > before else "short"


def package(conn: sa.Connection, valid: bool = True) -> int:
    digest = hashlib.sha256(f"rl-test-{next(_hashes)}".encode()).digest()
    return conn.execute(
        sa.text(
            "INSERT INTO input_packages (symbol, ts, payload, payload_format, data_hash, completeness_score, is_valid) "
            "VALUES (:s, now(), '\\x00', 'test', :h, 1, :v) RETURNING id"
        ),
        {"s": SYMBOL, "h": digest, "v": valid},
    ).scalar()


def experience(
    conn: sa.Connection,
    priority: float | None,
    *,
    profitable: bool = False,
    state: int | None = None,
    next_state: int | None = None,
    done: bool = False,
    reward: float = 0.0,
    symbol: str = SYMBOL,
) -> int:
    state = state if state is not None else package(conn)
    if next_state is None and not done:
        next_state = package(conn)
    return conn.execute(
        sa.text(
            "INSERT INTO experiences (symbol, state_package_id, next_state_package_id, action, reward, done, "
            "is_profitable, priority) VALUES (:sym, :s, :n, 'long', :r, :d, :p, :pr) RETURNING id"
        ),
        {"sym": symbol, "s": state, "n": next_state, "r": reward, "d": done, "p": profitable, "pr": priority},
    ).scalar()


def small_replay(engine: sa.Engine, priorities: list[float], profitable: list[bool], symbol: str = SYMBOL) -> list[int]:
    with engine.begin() as conn:
        return [
            experience(conn, p, profitable=f, reward=0.01 if f else -0.01, symbol=symbol)
            for p, f in zip(priorities, profitable)
        ]
