"""RL replay served from SQL (issue 7) against an in-memory sum tree measured in the same run.

1. Sample a batch (default 256) from N experiences (default 1,000,000) with
   ``ProfitWeightedExperienceBuffer.sample``: one statement draws, returns the rows the trainer
   needs (ids, packages, action, reward, done, optimal action, priority, probabilities; importance
   weights in Python) and logs the draws; against ``SumTreeReplay.sample`` (the textbook sum tree,
   same weights, same profitable share, same importance weights, gathering the same row fields).
2. Write back the batch's TD errors as priorities (``update_priorities``: one statement that logs
   them and re-weighs the rows' index entries) against the sum tree's leaf updates. The buffer's
   background thread folds the logs into ``experiences`` every ``--fold-every`` write-backs (the
   product's default, 16) while the rounds run; its time is reported per write-back folded.
3. A plain database floor: fetching the same number of random experience rows by primary key.
4. The same sample and write-back with ``TRAINSRV_RL_REPLAY_SYNCHRONOUS_COMMIT=true`` (each commit
   waits for the WAL flush), to show what the default's asynchronous commit saves.

All calls alternate within each round so machine noise hits every figure alike; p50 / p99, ratios
and the machine's load average are printed.

    python bench/bench_replay.py [--rows 1000000] [--rounds 300] [--batch 256] [--fold-every 16]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sumtree import SumTreeReplay  # noqa: E402

from app.config import get_settings  # noqa: E402
from app.db.engine import make_engine  # noqa: E402
from app.rl_replay import buffer as replay_buffer  # noqa: E402
from app.rl_replay.buffer import ProfitWeightedExperienceBuffer  # noqa: E402
from bench.common import bench_database, machine, percentile, summary  # noqa: E402

SYMBOL = "BENCH-PERP"
CHUNK = 100_000
PACKAGES = """
INSERT INTO input_packages (symbol, ts, payload, payload_format, data_hash, completeness_score, is_valid)
SELECT :symbol, now(), '\\x00', 'bench', sha256(('bench-' || g)::bytea), 1, true FROM generate_series(1, CAST(:n AS bigint)) g
"""
EXPERIENCES = """
INSERT INTO experiences (symbol, state_package_id, next_state_package_id, action, reward, done,
                         is_profitable, priority)
SELECT :symbol, CAST(:first AS bigint) + g - 1, CAST(:first AS bigint) + g, (ARRAY['long', 'short', 'hold'])[1 + g % 3],
       (random() - 0.55) / 100, false, random() < 0.4, exp(random() * 6 - 3)
FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) g
"""


def load(engine: sa.Engine, rows: int) -> float:
    """Insert ``rows`` experiences (and their packages) through the normal insert path."""
    start = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.text(PACKAGES), {"symbol": SYMBOL, "n": rows + 1})
        first = conn.execute(sa.text("SELECT min(id) FROM input_packages")).scalar()
    for lo in range(1, rows + 1, CHUNK):
        with engine.begin() as conn:
            conn.execute(
                sa.text(EXPERIENCES), {"symbol": SYMBOL, "first": first, "lo": lo, "hi": min(rows, lo + CHUNK - 1)}
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    return time.perf_counter() - start


def in_memory(engine: sa.Engine, seed: int) -> tuple[SumTreeReplay, np.ndarray]:
    """The same replay in memory: weights from v_rl_replay, the row fields as arrays."""
    with engine.connect() as conn:
        config = conn.execute(sa.text("SELECT alpha, profit_boost FROM rl_replay_config")).one()
        rows = conn.execute(
            sa.text(
                "SELECT id, sample_weight, is_profitable, state_package_id, next_state_package_id, action, reward, done "
                "FROM v_rl_replay ORDER BY id"
            )
        ).all()
    cols = list(zip(*rows))
    fields = {
        "id": np.array(cols[0]),
        "state": np.array(cols[3]),
        "next_state": np.array(cols[4]),
        "action": np.array(cols[5]),
        "reward": np.array(cols[6]),
        "done": np.array(cols[7]),
    }
    replay = SumTreeReplay(
        np.array(cols[1]), np.array(cols[2]), fields, alpha=config.alpha, profit_boost=config.profit_boost, seed=seed
    )
    return replay, fields["id"]


def run(url: str, rows: int, rounds: int, batch: int, fold_every: int) -> None:
    engine = make_engine(url)
    print(f"machine: {machine()}")
    print(f"loading {rows:,} experiences ... ", end="", flush=True)
    print(f"{load(engine, rows):.1f} s (insert trigger indexes them as they arrive)")
    settings = dataclasses.replace(get_settings(), rl_replay_fold_every=fold_every)
    buffer = ProfitWeightedExperienceBuffer(engine, seed=1, profitable_share=0.5, settings=settings)
    # Its logs are folded by the first buffer's thread (a fold takes the oldest logs, whoever wrote them).
    durable = ProfitWeightedExperienceBuffer(
        engine,
        seed=3,
        profitable_share=0.5,
        settings=dataclasses.replace(settings, rl_replay_synchronous_commit=True, rl_replay_fold_every=0),
    )
    tree, ids = in_memory(engine, seed=1)
    rng = np.random.default_rng(2)
    times = {k: [] for k in LABELS}
    print(f"load average before: {_load()}")
    with engine.connect() as conn:
        for _ in range(10):  # warm caches and prepared statements
            for buf in (buffer, durable):
                buf.update_priorities(buf.sample(batch, symbol=SYMBOL).ids, rng.exponential(1.0, batch))
        for _ in range(rounds):
            _round(buffer, durable, tree, conn, ids, rng, batch, times)
    print(f"load average after: {_load()}")
    _report(times, rows, batch)
    _report_fold(engine, buffer, durable, write_backs=2 * (rounds + 10))
    engine.dispose()


ACCEPTANCE = "SELECT rl_replay_acceptance()"


def _report_fold(engine: sa.Engine, buffer, durable, write_backs: int) -> None:
    """What the background fold cost, what it left, and the sampler's acceptance before and after folding it."""
    folds, seconds, failures = buffer._folder.folds, buffer._folder.seconds, buffer._folder.failures
    with engine.connect() as conn:
        acceptance = conn.execute(sa.text(ACCEPTANCE)).scalar()
    left = replay_buffer.pending(engine)
    start = time.perf_counter()
    durable.close()
    buffer.close()
    final = time.perf_counter() - start
    with engine.connect() as conn:
        folded_acceptance = conn.execute(sa.text(ACCEPTANCE)).scalar()
    folded = write_backs - left["write_backs"]
    print(
        f"\nbackground fold: {folds} transactions, {seconds * 1000:.0f} ms for {folded} write-backs "
        f"(+ their batches): {seconds * 1000 / max(folded, 1):.2f} ms per write-back; {failures} failed"
    )
    print(
        f"left unfolded at the end: {left['write_backs']} write-backs, {left['batches']} batches; "
        f"folded on close in {final * 1000:.0f} ms ({final * 1000 / max(left['write_backs'], 1):.2f} ms each)"
    )
    print(
        f"sampler acceptance (index weight / probe mass): {acceptance:.3f} before the last fold, "
        f"{folded_acceptance:.3f} after"
    )


LABELS = {
    "db_sample": "DB sample (draw + rows + draw log)",
    "tree_sample": "in-memory sum tree sample",
    "db_write": "DB priority write-back",
    "tree_write": "in-memory sum tree update",
    "pk_fetch": "plain PK fetch of as many rows",
    "durable_sample": "DB sample, synchronous commit",
    "durable_write": "DB write-back, synchronous commit",
}


def _timed(times: dict, key: str, fn):
    start = time.perf_counter()
    out = fn()
    times[key].append((time.perf_counter() - start) * 1000)
    return out


def _round(buffer, durable, tree, conn, ids, rng, batch, times) -> None:
    sampled = _timed(times, "db_sample", lambda: buffer.sample(batch, symbol=SYMBOL))
    _timed(times, "db_write", lambda: buffer.update_priorities(sampled.ids, rng.exponential(1.0, batch)))
    drawn = _timed(times, "tree_sample", lambda: tree.sample(batch, 0.5, sampled.beta))
    _timed(times, "tree_write", lambda: tree.update_priorities(drawn["indices"], rng.exponential(1.0, batch)))
    _timed(
        times,
        "pk_fetch",
        lambda: conn.execute(
            sa.text("SELECT * FROM experiences WHERE id = ANY(:ids)"), {"ids": rng.choice(ids, batch).tolist()}
        ).all(),
    )
    other = _timed(times, "durable_sample", lambda: durable.sample(batch, symbol=SYMBOL))
    _timed(times, "durable_write", lambda: durable.update_priorities(other.ids, rng.exponential(1.0, batch)))


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"


def _report(times: dict, rows: int, batch: int) -> None:
    print(f"\nbatch {batch} from {rows:,} experiences, {len(times['db_sample'])} rounds")
    for key, label in LABELS.items():
        print(f"  {label:<36} {summary(times[key])}")
    for num, den in (
        ("db_sample", "tree_sample"),
        ("db_write", "tree_write"),
        ("db_sample", "pk_fetch"),
        ("db_write", "pk_fetch"),
        ("durable_sample", "db_sample"),
        ("durable_write", "db_write"),
    ):
        r50 = percentile(times[num], 50) / percentile(times[den], 50)
        r99 = percentile(times[num], 99) / percentile(times[den], 99)
        print(f"  ratio {num} / {den}: p50 {r50:.2f}x, p99 {r99:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--fold-every",
        type=int,
        default=get_settings().rl_replay_fold_every,
        help="write-backs between background folds (0: fold only at the end)",
    )
    args = parser.parse_args()
    with bench_database() as url:
        run(url, args.rows, args.rounds, args.batch, args.fold_every)


if __name__ == "__main__":
    main()
