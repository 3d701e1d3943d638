"""Ingest benchmark: candle COPY path, bulk package ingest, client round trip — each against a
baseline measured in the same run on the same database.

    python bench/bench_ingest.py [--packages 1000] [--round-trips 500]

Uses TRAINSRV_DATABASE_URL's server if set (admin rights needed to create a scratch
database), else a throwaway embedded server. Needs the shared real candles.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.client import Client, Prediction  # noqa: E402
from app.config import get_settings  # noqa: E402
from app.db import migrate  # noqa: E402
from app.db.embedded import EmbeddedServer  # noqa: E402
from app.db.engine import make_engine, normalise_url  # noqa: E402
from app.ingest import ingest_candles, package_from_candles  # noqa: E402
from app.paths import REPO_ROOT  # noqa: E402

CANDLES = REPO_ROOT.parent / "shared" / "data" / "nautilus-ftx-btc-perp-1m" / "btc-perp-20211231-20220201_1m.csv"
T0 = dt.datetime(2022, 1, 3, 0, 0, tzinfo=dt.timezone.utc)


def scratch_database() -> tuple[str, callable]:
    settings = get_settings()
    if settings.database_url:
        admin, server = normalise_url(settings.database_url), None
    else:
        server = EmbeddedServer(Path(tempfile.mkdtemp(prefix="bench-ingest-")))
        admin = server.acquire()
    name = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    _admin(admin, f'CREATE DATABASE "{name}"')

    def drop():
        _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if server:
            server.release()
    return make_url(admin).set(database=name).render_as_string(hide_password=False), drop


def _admin(url: str, statement: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def raw_copy(engine: sa.Engine, create: str, copy_sql: str, chunks) -> float:
    """Seconds to COPY ``chunks`` (bytes or rows) into a fresh bare table, committed."""
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS bench_bare"))
        conn.execute(sa.text(create))
    started = time.perf_counter()
    with engine.begin() as conn:
        with conn.connection.driver_connection.cursor().copy(copy_sql) as copy:
            for chunk in chunks:
                copy.write(chunk) if isinstance(chunk, bytes) else copy.write_row(chunk)
    return time.perf_counter() - started


def bench_candles(engine: sa.Engine) -> dict:
    started = time.perf_counter()
    report = ingest_candles(engine, CANDLES, "BTC-PERP", "1m", progress=False)
    ours = time.perf_counter() - started
    base = raw_copy(engine, "CREATE TABLE bench_bare (ts timestamptz, open float8, high float8, low float8, "
                            "close float8, volume float8)",
                    "COPY bench_bare FROM STDIN WITH (FORMAT csv, HEADER true)", [CANDLES.read_bytes()])
    rows = report.loaded
    return {"rows": rows, "ours_rows_s": rows / ours, "copy_rows_s": rows / base, "ratio": base / ours}


def build_packages(engine: sa.Engine, n: int, offset_min: int) -> list:
    with engine.connect() as conn:
        return [package_from_candles(conn, "BTC-PERP", T0 + dt.timedelta(minutes=offset_min + i)) for i in range(n)]


def bench_bulk(engine: sa.Engine, packages: list) -> dict:
    texts = [p.to_json() for p in packages]
    size = sum(len(t) for t in texts)
    base = raw_copy(engine, "CREATE TABLE bench_bare (seq bigint, doc text)", "COPY bench_bare FROM STDIN",
                    [(i, t) for i, t in enumerate(texts)])
    with Client(engine) as client:
        started = time.perf_counter()
        results = client.insert_packages(packages, batch_size=500)
        ours = time.perf_counter() - started
    assert all(r.created and r.is_valid for r in results)
    n = len(packages)
    return {"n": n, "mb": size / 1e6, "ours_pkg_s": n / ours, "copy_pkg_s": n / base,
            "ours_mb_s": size / 1e6 / ours, "copy_mb_s": size / 1e6 / base, "ratio": base / ours}


def bench_round_trip(engine: sa.Engine, packages: list) -> dict:
    prediction = Prediction(model_kind="cnn", model_version="bench", action="long", confidence=0.6, horizon_s=300)
    with Client(engine) as client:
        for p in packages[:20]:  # warm the connection's prepared statements
            client.record(p, prediction)
        times = []
        for p in packages[20:]:
            started = time.perf_counter()
            client.record(p, prediction)
            times.append(time.perf_counter() - started)
        conn = client._connection()
        pings = []
        for _ in range(len(times)):
            started = time.perf_counter()
            with conn.begin():
                conn.execute(sa.text("SELECT 1")).one()
            pings.append(time.perf_counter() - started)
    q = statistics.quantiles(times, n=100)
    return {"n": len(times), "p50_ms": q[49] * 1e3, "p99_ms": q[98] * 1e3,
            "select1_p50_ms": statistics.median(pings) * 1e3}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--round-trips", type=int, default=500)
    args = parser.parse_args(argv)
    url, drop = scratch_database()
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        c = bench_candles(engine)
        print(f"candles: {c['rows']} rows, ingest {c['ours_rows_s']:,.0f} rows/s, raw COPY "
              f"{c['copy_rows_s']:,.0f} rows/s -> {c['ratio']:.2f}x of raw COPY")
        packages = build_packages(engine, args.packages + args.round_trips + 20, 0)
        b = bench_bulk(engine, packages[:args.packages])
        print(f"bulk packages: {b['n']} ({b['mb']:.1f} MB JSON), ingest {b['ours_pkg_s']:,.0f} pkg/s "
              f"({b['ours_mb_s']:.1f} MB/s), raw COPY of the same bytes {b['copy_pkg_s']:,.0f} pkg/s "
              f"({b['copy_mb_s']:.1f} MB/s) -> {b['ratio']:.2f}x of raw COPY (target >= 0.50)")
        r = bench_round_trip(engine, packages[args.packages:])
        print(f"client record round trip: n={r['n']} p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms "
              f"(targets 3 / 10 ms); SELECT 1 transaction p50 {r['select1_p50_ms']:.2f} ms "
              f"-> {r['p50_ms'] / r['select1_p50_ms']:.1f}x of an empty round trip")
    finally:
        engine.dispose()
        drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
