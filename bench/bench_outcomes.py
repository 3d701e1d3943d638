"""Outcome labelling: 1M predictions over the real BTC-PERP candles, set-based SQL vs Python loops.

Target (issue 4): labelling >= 50x faster than a straightforward per-prediction Python loop,
measured in the same run. The loops are timed on a random sample and extrapolated to the full
count (at ~1-2 ms per prediction, looping over all 1M would take most of an hour):

- ``loop-orm``: for each prediction, read it, its package and its window's candles with the
  typed models, compute the outcome in Python, upsert the outcome row; one commit at the end —
  how a labeller is usually first written in this code base.
- ``loop``: the same with Core text statements (three round trips per prediction).
- ``loop-preloaded``: a harder baseline: all candles held in a Python dict, no per-prediction
  reads; per-prediction compute and upsert only.

The loops write into a temporary copy of ``outcomes``; their results are checked against the
SQL's on the sample, so the figures compare equal work.

Usage: python bench/bench_outcomes.py [--n 1000000] [--sample 2000]
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime as dt
import io
import math
import random
import time
from pathlib import Path

import sqlalchemy as sa
from common import bench_database, machine
from sqlalchemy import orm

from app.config import Settings  # noqa: E402  (common puts the checkout on sys.path)
from app.db import models  # noqa: E402
from app.outcomes.validate import validate_outcomes  # noqa: E402

CSV = (
    Path(__file__).resolve().parent.parent.parent
    / "shared"
    / "data"
    / "nautilus-ftx-btc-perp-1m"
    / "btc-perp-20211231-20220201_1m.csv"
)
SYMBOL = "BTC-PERP"
HORIZONS_S = (300, 900, 3600)
SETTINGS = Settings(fee_rate=0.0004, slippage_rate=0.0001)
UTC = dt.UTC
LABEL = (
    "status",
    "entry_price",
    "exit_price",
    "price_return",
    "max_favorable_excursion",
    "max_adverse_excursion",
    "actual_profit",
    "profitability_score",
    "optimal_action",
    "is_profitable",
)


def read_candles() -> list[tuple]:
    with open(CSV, newline="") as f:
        return [
            (
                dt.datetime.fromisoformat(r["timestamp"]).replace(tzinfo=UTC),
                float(r["open"]),
                float(r["high"]),
                float(r["low"]),
                float(r["close"]),
                float(r["volume"]),
            )
            for r in csv.DictReader(f)
        ]


def _copy(conn, statement: str, lines) -> None:
    with conn.connection.driver_connection.cursor() as cur, cur.copy(statement) as copy:
        buf = io.StringIO()
        for i, line in enumerate(lines):
            buf.write(line)
            if i % 100_000 == 99_999:
                copy.write(buf.getvalue())
                buf = io.StringIO()
        copy.write(buf.getvalue())


def load(engine, candles: list[tuple], n: int, seed: int = 1) -> None:
    """Candles; one package per minute; ``n`` predictions at random seconds, horizons and actions."""
    rng = random.Random(seed)
    with engine.begin() as conn:
        _copy(
            conn,
            "COPY candles (symbol, timeframe, ts, open, high, low, close, volume) FROM STDIN",
            (f"{SYMBOL}\t1m\t{c[0].isoformat()}\t{c[1]}\t{c[2]}\t{c[3]}\t{c[4]}\t{c[5]}\n" for c in candles),
        )
        _copy(
            conn,
            "COPY input_packages (symbol, ts, payload, payload_format, data_hash, completeness_score, "
            "is_valid) FROM STDIN",
            (f"{SYMBOL}\t{c[0].isoformat()}\t\\\\x00\tbench\t\\\\x{i:064x}\t1\tt\n" for i, c in enumerate(candles)),
        )
        first_id = conn.execute(sa.text("SELECT min(id) FROM input_packages")).scalar_one()
        # Leave the last hour out so every horizon ends inside the data.
        last = len(candles) - 61

        def rows():
            for i in range(n):
                k = rng.randrange(last)
                at = candles[k][0] + dt.timedelta(seconds=rng.randrange(60))
                yield (
                    f"b{i}\t{first_id + k}\tcnn\tv1\t{rng.choice(('long', 'short', 'hold'))}\t0.5\t"
                    f"{rng.choice(HORIZONS_S)}\t{at.isoformat()}\n"
                )

        _copy(
            conn,
            "COPY predictions (prediction_key, package_id, model_kind, model_version, action, confidence, "
            "horizon_s, predicted_at) FROM STDIN",
            rows(),
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE candles, input_packages, predictions"))


# -- the straightforward per-prediction loops ------------------------------------------------------

WINDOW = sa.text(
    "SELECT ts, open, high, low, close FROM candles WHERE symbol = :s AND timeframe = '1m' "
    "AND ts BETWEEN :a AND :b ORDER BY ts"
)
PREDICTION = sa.text(
    "SELECT p.id, p.action, p.predicted_at, p.horizon_s, pk.symbol FROM predictions p "
    "JOIN input_packages pk ON pk.id = p.package_id WHERE p.id = :id"
)
UPSERT = sa.text(
    "INSERT INTO loop_outcomes (prediction_id, status, pending_reason, entry_price, exit_price, price_return, "
    "max_favorable_excursion, max_adverse_excursion, actual_profit, profitability_score, optimal_action, "
    "is_profitable, validated_at) VALUES (:id, :status, :reason, :entry, :exit, :ret, :mfe, :mae, :profit, :score, "
    ":optimal, :profitable, now()) ON CONFLICT (prediction_id) DO UPDATE SET status = EXCLUDED.status, "
    "entry_price = EXCLUDED.entry_price, exit_price = EXCLUDED.exit_price, actual_profit = EXCLUDED.actual_profit"
)


def label_one(action: str, predicted_at: dt.datetime, horizon_s: int, bars: list) -> dict:
    """The documented conventions, one prediction at a time (docs/outcomes.md)."""
    first, last = window_bounds(predicted_at, horizon_s)
    expected = int((last - first).total_seconds()) // 60 + 1
    if expected < 1 or len(bars) != expected:
        return {"status": "pending", "reason": "gap"}
    entry, exit_ = bars[0][1], bars[-1][4]
    hi, lo = max(b[2] for b in bars), min(b[3] for b in bars)
    ret, cost = exit_ / entry - 1, 2 * (SETTINGS.fee_rate + SETTINGS.slippage_rate)
    up, down = hi / entry - 1, 1 - lo / entry
    profit = {"long": ret - cost, "short": -ret - cost}.get(action, 0.0)
    mfe = {"long": max(up, 0), "short": max(down, 0)}.get(action)
    mae = {"long": max(down, 0), "short": max(up, 0)}.get(action)
    risk = max(mae or 0.0, cost, 0.0001)
    return {
        "status": "validated",
        "reason": None,
        "entry": entry,
        "exit": exit_,
        "ret": ret,
        "mfe": mfe,
        "mae": mae,
        "profit": profit,
        "score": 0.5 + 0.5 * math.tanh(profit / risk / 2),
        "optimal": "long" if ret - cost > 0 else "short" if -ret - cost > 0 else "hold",
        "profitable": profit > 0,
    }


def window_bounds(predicted_at: dt.datetime, horizon_s: int) -> tuple[dt.datetime, dt.datetime]:
    """First bar opening strictly after the prediction, last bar closing by the horizon end (1m grid)."""
    first = (int(predicted_at.timestamp()) // 60 + 1) * 60
    last = (int(predicted_at.timestamp() + horizon_s) // 60 - 1) * 60
    return dt.datetime.fromtimestamp(first, UTC), dt.datetime.fromtimestamp(last, UTC)


def loop(engine, ids: list[int]) -> float:
    """Per prediction: read it, read its candles, compute, upsert. Returns seconds."""
    start = time.perf_counter()
    with engine.begin() as conn:
        for pid in ids:
            p = conn.execute(PREDICTION, {"id": pid}).one()
            a, b = window_bounds(p.predicted_at, p.horizon_s)
            bars = [tuple(r) for r in conn.execute(WINDOW, {"s": p.symbol, "a": a, "b": b})]
            conn.execute(UPSERT, {"id": pid, **_row(label_one(p.action, p.predicted_at, p.horizon_s, bars))})
    return time.perf_counter() - start


def loop_orm(engine, ids: list[int]) -> float:
    """The same loop with the typed models (the house style for plain row reads). Returns seconds."""
    start = time.perf_counter()
    with orm.Session(engine) as session:
        for pid in ids:
            p = session.get(models.Prediction, pid)
            symbol = session.get(models.InputPackage, p.package_id).symbol
            a, b = window_bounds(p.predicted_at, p.horizon_s)
            bars = session.scalars(
                sa.select(models.Candle)
                .where(models.Candle.symbol == symbol, models.Candle.timeframe == "1m", models.Candle.ts.between(a, b))
                .order_by(models.Candle.ts)
            ).all()
            label = label_one(
                p.action, p.predicted_at, p.horizon_s, [(c.ts, c.open, c.high, c.low, c.close) for c in bars]
            )
            session.execute(UPSERT, {"id": pid, **_row(label)})
        session.commit()
    return time.perf_counter() - start


def loop_preloaded(engine, ids: list[int], candles: list[tuple]) -> float:
    """Candles in memory (bisect by time); per prediction: compute and upsert. Returns seconds."""
    times = [c[0] for c in candles]
    with engine.connect() as conn:
        preds = {
            r.id: r
            for r in conn.execute(
                sa.text("SELECT p.id, p.action, p.predicted_at, p.horizon_s FROM predictions p WHERE p.id = ANY(:ids)"),
                {"ids": ids},
            )
        }
    start = time.perf_counter()
    with engine.begin() as conn:
        for pid in ids:
            p = preds[pid]
            a, b = window_bounds(p.predicted_at, p.horizon_s)
            bars = candles[bisect.bisect_left(times, a) : bisect.bisect_right(times, b)]
            conn.execute(UPSERT, {"id": pid, **_row(label_one(p.action, p.predicted_at, p.horizon_s, bars))})
    return time.perf_counter() - start


def _row(label: dict) -> dict:
    keys = ("entry", "exit", "ret", "mfe", "mae", "profit", "score", "optimal", "profitable")
    return {"status": label["status"], "reason": label["reason"], **{k: label.get(k) for k in keys}}


def check_equal(engine, ids: list[int]) -> None:
    """The loop and the SQL agree on every sampled prediction."""
    cols = ", ".join(f"o.{c}" for c in LABEL)
    with engine.connect() as conn:
        sql = {
            r[0]: r[1:]
            for r in conn.execute(
                sa.text(f"SELECT o.prediction_id, {cols} FROM outcomes o WHERE o.prediction_id = ANY(:ids)"),
                {"ids": ids},
            )
        }
        mine = {
            r[0]: r[1:]
            for r in conn.execute(
                sa.text(f"SELECT o.prediction_id, {cols} FROM loop_outcomes o WHERE o.prediction_id = ANY(:ids)"),
                {"ids": ids},
            )
        }
    for pid in ids:
        for a, b in zip(sql[pid], mine[pid]):
            same = math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15) if isinstance(a, float) else a == b
            assert same, f"prediction {pid}: SQL {sql[pid]} vs loop {mine[pid]}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--sample", type=int, default=2000)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    candles = read_candles()
    with bench_database() as url:
        engine = sa.create_engine(url)
        t = time.perf_counter()
        load(engine, candles, args.n)
        print(f"loaded {len(candles)} candles and {args.n} predictions in {time.perf_counter() - t:.1f} s")
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE UNLOGGED TABLE loop_outcomes (LIKE outcomes INCLUDING DEFAULTS, "
                    "PRIMARY KEY (prediction_id))"
                )
            )
            ids = _sample_ids(conn, args.sample)
        # Half of each loop's sample before the SQL run and half after: the machine is shared, and
        # splitting keeps a change of load from favouring either side.
        halves = (ids[0::2], ids[1::2])
        loops = {name: 0.0 for name in LOOPS}
        _run_loops(engine, halves[0], candles, loops)
        as_of = dt.datetime(2030, 1, 1, tzinfo=UTC)
        t = time.perf_counter()
        result = validate_outcomes(engine, SETTINGS, as_of=as_of)
        sql_s = time.perf_counter() - t
        t = time.perf_counter()
        rerun = validate_outcomes(engine, SETTINGS, as_of=as_of)
        rerun_s = time.perf_counter() - t
        _run_loops(engine, halves[1], candles, loops, check=True)
        report(args.n, len(ids), result, rerun, sql_s, rerun_s, loops)
        engine.dispose()


LOOPS = {
    "loop-orm (typed models: per-prediction reads, upsert per row)": lambda e, ids, c: loop_orm(e, ids),
    "loop (Core text statements: per-prediction reads, upsert per row)": lambda e, ids, c: loop(e, ids),
    "loop-preloaded (candles in memory, upsert per row)": loop_preloaded,
}


def _run_loops(engine, ids, candles, totals: dict, check: bool = False) -> None:
    """Run every loop over ``ids``, adding its seconds to ``totals``; with ``check``, compare with the SQL."""
    for name, fn in LOOPS.items():
        with engine.begin() as conn:  # every loop inserts, none updates a previous loop's rows
            conn.execute(sa.text("DELETE FROM loop_outcomes WHERE prediction_id = ANY(:ids)"), {"ids": ids})
        totals[name] += fn(engine, ids, candles)
        if check:
            check_equal(engine, ids)


def _sample_ids(conn, size: int) -> list[int]:
    ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM predictions"))]
    return sorted(random.Random(2).sample(ids, size))


def report(n, sample, result, rerun, sql_s, rerun_s, loops: dict[str, float]) -> None:
    print(
        f"SQL labelling: {result.considered} predictions ({result.validated} validated, "
        f"{result.pending_new} pending) in {sql_s:.1f} s = {result.considered / sql_s:,.0f} predictions/s "
        f"({result.batches} batches)"
    )
    print(
        f"re-run with nothing to do: {rerun_s:.2f} s ({rerun.considered} examined, "
        f"{rerun.validated + rerun.relabelled} written)"
    )
    for name, seconds in loops.items():
        full = seconds / sample * n
        print(
            f"{name}: {sample} in {seconds:.2f} s = {sample / seconds:,.0f}/s, extrapolated to {n}: "
            f"{full:.0f} s -> SQL is {full / sql_s:.0f}x faster"
        )
    print("sample results of every loop equal the SQL's")


if __name__ == "__main__":
    main()
