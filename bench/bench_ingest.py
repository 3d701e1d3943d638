"""Ingest benchmark: candle load, bulk package ingest, client round trip — each against a
baseline measured in the same run, on the same database, interleaved with the measured path.

    python bench/bench_ingest.py [--rounds 3] [--packages 1000] [--round-trips 300] [--connections 1,2]
                                 [--candles FILE]

Each round runs the baseline and the measured path back to back (so both see the same machine
load); the figures printed are medians over the rounds. Baselines:

* candles: raw ``COPY ... (FORMAT csv)`` of the same file into a bare typed table (no key);
* bulk packages: raw ``COPY`` of the same JSON texts into a bare ``(seq bigint, doc text)``
  table (the texts are encoded before its timer starts; the measured path encodes its own);
* round trip: per package, a durable one-row ``INSERT`` of the same JSON text into a bare
  table (one prepared statement, autocommit), alternated with ``Client.record``; plus the
  ``SELECT 1`` round trip for scale.

Uses TRAINSRV_BENCH_DATABASE_URL (an admin URL) if set, else a throwaway embedded server.
Needs the shared real candles.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.client import Client, Prediction  # noqa: E402
from app.db.engine import make_engine  # noqa: E402
from app.ingest import ModelInputPackage, ingest_candles, package_from_candles  # noqa: E402
from app.paths import REPO_ROOT  # noqa: E402
from bench.common import bench_database, machine  # noqa: E402

CANDLES = REPO_ROOT.parent / "shared" / "data" / "nautilus-ftx-btc-perp-1m" / "btc-perp-20211231-20220201_1m.csv"
T0 = dt.datetime(2022, 1, 3, 0, 0, tzinfo=dt.UTC)
PREDICTION = Prediction(model_kind="cnn", model_version="bench", action="long", confidence=0.6, horizon_s=300)


def raw_copy(engine: sa.Engine, create: str, copy_sql: str, rows) -> float:
    """Seconds to COPY ``rows`` (bytes chunks or row tuples) into a fresh bare table, committed."""
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_bare"))
        conn.execute(sa.text(create))
    started = time.perf_counter()
    with engine.begin() as conn:
        with conn.connection.driver_connection.cursor().copy(copy_sql) as copy:
            for row in rows:
                copy.write(row) if isinstance(row, bytes) else copy.write_row(row)
    return time.perf_counter() - started


def bench_candles(engine: sa.Engine, rounds: int, candles: Path = CANDLES) -> dict:
    data = candles.read_bytes()
    base, first, again = [], [], []
    for r in range(rounds):
        base.append(
            raw_copy(
                engine,
                "CREATE TABLE bench_bare (ts timestamptz, open float8, high float8, "
                "low float8, close float8, volume float8)",
                "COPY bench_bare FROM STDIN WITH (FORMAT csv, HEADER true)",
                [data],
            )
        )
        report = ingest_candles(engine, candles, f"BENCH-{r}", "1m", progress=False)
        assert report.loaded == 45031 and report.rejected == 0, report
        first.append(report.elapsed_s)
        report = ingest_candles(engine, candles, f"BENCH-{r}", "1m", progress=False)
        assert report.loaded == 0 and report.duplicates == 45031, report
        again.append(report.elapsed_s)
    rows = 45031
    return {
        "rows": rows,
        "copy_rows_s": rows / statistics.median(base),
        "first_rows_s": rows / statistics.median(first),
        "again_rows_s": rows / statistics.median(again),
        "first_ratio": statistics.median(b / f for b, f in zip(base, first)),
        "again_ratio": statistics.median(b / a for b, a in zip(base, again)),
    }


def build_packages(engine: sa.Engine, n: int) -> list[ModelInputPackage]:
    with engine.connect() as conn:
        return [package_from_candles(conn, "BENCH-0", T0 + dt.timedelta(minutes=i)) for i in range(n)]


def variants(packages: list[ModelInputPackage], tag: str) -> list[ModelInputPackage]:
    """The same packages made new to the database (another metadata tag, so another hash)."""
    return [dataclasses.replace(p, metadata={**p.metadata, "bench": tag}) for p in packages]


def bench_bulk(engine: sa.Engine, packages: list, rounds: int, connections: tuple[int, ...] = (1, 2)) -> dict:
    base, ours = [], {c: [] for c in connections}
    size = 0
    with Client(engine) as client:
        for r in range(rounds):
            for conns in connections:
                batch = variants(packages, f"bulk-{r}-{conns}")
                texts = [p.to_json() for p in batch]
                size = sum(len(t) for t in texts)
                base.append(
                    raw_copy(
                        engine,
                        "CREATE TABLE bench_bare (seq bigint, doc text)",
                        "COPY bench_bare FROM STDIN",
                        [(i, t) for i, t in enumerate(texts)],
                    )
                )
                started = time.perf_counter()
                results = client.insert_packages(batch, batch_size=250, connections=conns)
                ours[conns].append(time.perf_counter() - started)
                assert len(results) == len(batch) and all(x.created and x.is_valid for x in results)
    n = len(packages)
    out = {"n": n, "mb": size / 1e6, "copy_pkg_s": n / statistics.median(base)}
    for i, (conns, times) in enumerate(ours.items()):
        pairs = list(zip(base[i :: len(connections)], times))
        out[f"pkg_s_{conns}"] = n / statistics.median(times)
        out[f"ratio_{conns}"] = statistics.median(b / t for b, t in pairs)
    return out


def bench_round_trip(engine: sa.Engine, packages: list, rounds: int) -> dict:
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    ours, bare, pings = [], [], []
    with Client(engine) as client, psycopg.connect(url, autocommit=True) as raw:
        raw.execute("DROP TABLE IF EXISTS bench_bare_rt")
        raw.execute("CREATE TABLE bench_bare_rt (doc text)")
        for r in range(rounds):
            batch = variants(packages, f"rt-{r}")
            for p in batch[:10]:  # warm both connections
                client.record(p, PREDICTION)
                raw.execute("INSERT INTO bench_bare_rt VALUES (%s)", (p.to_json(),), prepare=True)
            for p in batch[10:]:
                started = time.perf_counter()
                raw.execute("INSERT INTO bench_bare_rt VALUES (%s)", (p.to_json(),), prepare=True)
                bare.append(time.perf_counter() - started)
                started = time.perf_counter()
                client.record(p, PREDICTION)
                ours.append(time.perf_counter() - started)
                started = time.perf_counter()
                raw.execute("SELECT 1", prepare=True).fetchone()
                pings.append(time.perf_counter() - started)

    def q(samples, pct):
        return statistics.quantiles(samples, n=100)[pct - 1] * 1e3

    return {
        "n": len(ours),
        "p50": q(ours, 50),
        "p99": q(ours, 99),
        "bare_p50": q(bare, 50),
        "bare_p99": q(bare, 99),
        "ping_p50": q(pings, 50),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--round-trips", type=int, default=300)
    parser.add_argument("--connections", default="1,2", help="bulk ingest connection counts, comma-separated")
    parser.add_argument("--candles", type=Path, default=CANDLES, help="the shared 45k-row candle file")
    args = parser.parse_args(argv)
    connections = tuple(int(c) for c in args.connections.split(","))
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.1f}")
    with bench_database() as url:
        engine = make_engine(url)
        try:
            c = bench_candles(engine, args.rounds, args.candles)
            print(
                f"candles: {c['rows']} rows; first load {c['first_rows_s']:,.0f} rows/s = {c['first_ratio']:.2f}x of "
                f"raw COPY ({c['copy_rows_s']:,.0f} rows/s); idempotent re-load {c['again_rows_s']:,.0f} rows/s = "
                f"{c['again_ratio']:.2f}x"
            )
            packages = build_packages(engine, max(args.packages, args.round_trips + 10))
            b = bench_bulk(engine, packages[: args.packages], args.rounds, connections)
            per_conns = ", ".join(
                f"on {n} connection{'s' if n > 1 else ''} {b[f'pkg_s_{n}']:,.0f} pkg/s = {b[f'ratio_{n}']:.2f}x"
                for n in connections
            )
            print(
                f"bulk packages: {b['n']} per round ({b['mb']:.1f} MB JSON); raw COPY of the same bytes "
                f"{b['copy_pkg_s']:,.0f} pkg/s; ingest {per_conns} (target >= 0.50x)"
            )
            r = bench_round_trip(engine, packages[: args.round_trips + 10], args.rounds)
            print(
                f"client record round trip: n={r['n']} p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms "
                f"(targets 3 / 10 ms); durable bare INSERT of the same text p50 {r['bare_p50']:.2f} ms, "
                f"p99 {r['bare_p99']:.2f} ms; SELECT 1 p50 {r['ping_p50']:.2f} ms"
            )
        finally:
            engine.dispose()
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
