"""Shared set-up for benchmarks: a throw-away migrated database and timing helpers.

Benchmarks use ``TRAINSRV_BENCH_DATABASE_URL`` (an admin URL) when set, otherwise an embedded
server in a temporary folder. Every figure is printed next to a baseline measured in the same run.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import migrate  # noqa: E402
from app.db.embedded import EmbeddedServer  # noqa: E402
from app.db.engine import make_engine, normalise_url  # noqa: E402


@contextlib.contextmanager
def bench_database():
    """Yield the URL of a fresh database migrated to head; dropped afterwards."""
    admin = os.environ.get("TRAINSRV_BENCH_DATABASE_URL")
    server = None
    with tempfile.TemporaryDirectory(prefix="trainsrv-bench-") as tmp:
        try:
            if admin:
                admin = normalise_url(admin)
            else:
                server = EmbeddedServer(Path(tmp))
                admin = server.acquire()
            name = f"bench_{uuid.uuid4().hex[:8]}"
            _autocommit(admin, f'CREATE DATABASE "{name}"')
            url = make_url(admin).set(database=name).render_as_string(hide_password=False)
            engine = make_engine(url)
            migrate.upgrade(engine)
            engine.dispose()
            yield url
            _autocommit(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            if server is not None:
                server.release()


def _autocommit(url: str, statement: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(statement))
    engine.dispose()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def timed(fn, repeat: int) -> list[float]:
    """Wall-clock milliseconds of ``repeat`` calls of ``fn``."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(samples_ms: list[float]) -> str:
    return (
        f"p50 {percentile(samples_ms, 50):.2f} ms, p99 {percentile(samples_ms, 99):.2f} ms, "
        f"mean {statistics.fmean(samples_ms):.2f} ms (n={len(samples_ms)})"
    )


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}, {platform.platform()}"
