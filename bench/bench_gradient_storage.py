"""Partitioned gradient storage (issue 20) against the unpartitioned table, same server, same run.

Two databases on one server: one at head (gradient_blobs partitioned by session, migration 0013), one
at the migration before 0013 (the plain table). Rounds alternate between them (the order swapped every round):

1. write: the background writer captures and writes ``--steps`` steps of the reference CNN's gradients
   into a new session (binary COPY, one transaction per batch), MB/s;
2. read: ``stored_steps.read_steps`` reads them back (binary fetch, checksum-verified decode), MB/s;
3. drop: removing that session's gradients: ``gradient_blobs_drop_partition`` (DETACH + DROP TABLE) at
   head; ``DELETE ... WHERE session_id`` and the ``VACUUM gradient_blobs`` that frees the space on the
   plain table.

Ratios are partitioned ÷ plain, medians of the per-round ratios.

    python bench/bench_gradient_storage.py [--steps 60] [--rounds 5] [--sessions 20]

``--sessions`` other sessions' gradients are written into both databases first, so the partitioned
table has that many partitions while the plain one holds the same rows. Uses TRAINSRV_BENCH_DATABASE_URL
(an admin URL) or a throw-away embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import migrate  # noqa: E402
from app.db.engine import make_engine  # noqa: E402
from app.recording import stored_steps  # noqa: E402
from app.recording.session import WriterOptions  # noqa: E402
from bench import bench_capture as bc  # noqa: E402
from bench.common import _autocommit, machine  # noqa: E402

NEW_SESSION = (
    "INSERT INTO training_sessions (model_kind, model_name, seed, torch_version, trainsrv_version, device, "
    "capture_policy, replay_exact) VALUES ('cnn', 'bench', 0, 'x', 'x', 'cpu', 'full', true) RETURNING id"
)


@contextlib.contextmanager
def two_databases():
    """Engines of a database at head and one just before migration 0013 (plain gradient_blobs), on one server."""
    with bc.database() as admin:
        names, engines = [], {}
        try:
            for label, revision in (("partitioned", "heads"), ("plain", migrate.previous_revision("0013"))):
                name = f"bench_{uuid.uuid4().hex[:8]}"
                _autocommit(admin, f'CREATE DATABASE "{name}"')
                names.append(name)
                engine = make_engine(make_url(admin).set(database=name).render_as_string(hide_password=False))
                migrate.upgrade(engine, revision)
                engines[label] = engine
            yield engines
        finally:
            for engine in engines.values():
                engine.dispose()
            for name in names:
                _autocommit(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_session(engine: sa.Engine) -> int:
    with engine.begin() as conn:
        return conn.execute(sa.text(NEW_SESSION)).scalar_one()


def write(engine: sa.Engine, cap, steps: int) -> tuple[int, float, int]:
    sid = new_session(engine)
    seconds, stats = bc.writer_round(engine, sid, cap, WriterOptions(), 1, steps)
    return sid, seconds, stats.blob_bytes


def read(engine: sa.Engine, sid: int, steps: int) -> float:
    t0 = time.perf_counter()
    count = sum(1 for _ in stored_steps.read_steps(engine, sid, 1, steps))
    assert count == steps
    return time.perf_counter() - t0


def drop(engine: sa.Engine, sid: int, partitioned: bool) -> float:
    """Seconds to remove the session's gradients; for the plain table the VACUUM that frees their space
    is included (it scans the whole table, every session's rows)."""
    statement = (
        "SELECT gradient_blobs_drop_partition(:s)"
        if partitioned
        else "DELETE FROM gradient_blobs WHERE session_id = :s"
    )
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.text(statement), {"s": sid})
    if not partitioned:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM gradient_blobs"))
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--channels", type=int, default=None, help="reference CNN width (default: its own)")
    p.add_argument("--hidden", type=int, default=None)
    args = p.parse_args(argv)
    bc.MODEL_CONFIG.update({k: v for k, v in (("channels", args.channels), ("hidden", args.hidden)) if v})
    print(machine())
    print(f"[load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}]")
    _, cap = bc.captured_steps(slots=WriterOptions().slots)
    times = {label: {"write": [], "read": [], "drop": []} for label in ("partitioned", "plain")}
    with two_databases() as engines:
        for engine in engines.values():
            for _ in range(args.sessions):
                write(engine, cap, 5)
        size = 0
        for r in range(args.rounds):
            for label in ("partitioned", "plain") if r % 2 == 0 else ("plain", "partitioned"):
                engine, t = engines[label], times[label]
                sid, seconds, size = write(engine, cap, args.steps)
                t["write"].append(seconds)
                t["read"].append(read(engine, sid, args.steps))
                t["drop"].append(drop(engine, sid, label == "partitioned"))
    report(times, size, args)
    print(f"[load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}]")
    return 0


def report(times: dict, size: int, args) -> None:
    print(
        f"{args.steps} steps of the reference CNN ({size / 1e6:.1f} MB) per round, {args.rounds} rounds, "
        f"{args.sessions} other sessions in each database"
    )
    for what in ("write", "read", "drop"):
        part, plain = times["partitioned"][what], times["plain"][what]
        if what == "drop":
            line = (
                f"  {what:<6} partitioned {1000 * statistics.median(part):8.1f} ms   plain (DELETE + VACUUM) "
                f"{1000 * statistics.median(plain):8.1f} ms"
            )
            ratio = statistics.median(b / a for a, b in zip(part, plain))
            print(f"{line}   plain ÷ partitioned {ratio:6.2f}×")
            continue
        mb = [size / s / 1e6 for s in part], [size / s / 1e6 for s in plain]
        ratio = statistics.median(b / a for a, b in zip(part, plain))  # time plain / time partitioned
        print(
            f"  {what:<6} partitioned {statistics.median(mb[0]):8.1f} MB/s   plain {statistics.median(mb[1]):8.1f} "
            f"MB/s   partitioned ÷ plain {ratio:6.3f}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
