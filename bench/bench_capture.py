"""Gradient capture cost and gradient write throughput (issue 6), each against a same-run baseline.

1. Step time of the reference CNN with ``full`` capture (SessionRecorder: copy, background
   writer, checkpoints off) divided by the step time of the same loop without any recording.
   Blocks of steps alternate between the two so machine noise hits both; medians are compared.
2. Gradient write throughput of the background writer (encode, SHA-256 per chunk, binary COPY
   into gradient_blobs, step rows, one transaction per drained batch) divided by a raw binary
   COPY of the same chunk bytes as bytea into a bare one-column table.

    python bench/bench_capture.py [--steps 40] [--rounds 5] [--write-steps 300]

Uses TRAINSRV_BENCH_DATABASE_URL, or a throw-away embedded PostgreSQL in a temp folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db import migrate  # noqa: E402
from app.db.embedded import EmbeddedServer  # noqa: E402
from app.db.engine import make_engine, normalise_url  # noqa: E402
from app.nets import interface  # noqa: E402
from app.nets.losses import cnn_loss  # noqa: E402
from app.trainer.capture import CapturePolicy, GradientCapture  # noqa: E402
from app.trainer.loop import Batch, train_step  # noqa: E402
from app.trainer.optim import OptimizerSpec  # noqa: E402
from app.trainer.session import SessionRecorder, SessionSpec  # noqa: E402
from app.trainer.writer import BackgroundWriter, StepRecord  # noqa: E402

SPEC_IN = interface.InputSpec(("1m", "5m", "15m", "1h"), 60)
BATCH = 32


def database() -> tuple[str, EmbeddedServer | None]:
    url = os.environ.get("TRAINSRV_BENCH_DATABASE_URL")
    if url:
        return normalise_url(url), None
    server = EmbeddedServer(Path(tempfile.mkdtemp(prefix="bench-capture-")))
    return server.acquire(), server


def make_run(seed: int = 0):
    torch.manual_seed(seed)
    model = interface.build_model(interface.REFERENCE, SPEC_IN, {})
    spec = OptimizerSpec(total_steps=10_000)
    x = torch.randn(BATCH, *SPEC_IN.shape())
    action, move, prof = torch.randint(0, 3, (BATCH,)), torch.randn(BATCH), torch.rand(BATCH)
    return model, spec.build(model.parameters()), spec, lambda m=model: cnn_loss(m(x), action, move, prof)


def timed_block(recorder, model, optimizer, spec, loss_fn, first_step: int, steps: int) -> list[float]:
    times = []
    for step in range(first_step, first_step + steps):
        t0 = time.perf_counter()
        train_step(recorder, model, optimizer, spec, step, Batch(list(range(BATCH)), {}), loss_fn)
        times.append(time.perf_counter() - t0)
    return times


def bench_step_time(engine: sa.Engine, steps: int, rounds: int) -> dict:
    plain = make_run()
    captured = make_run()
    rec = SessionRecorder.start(engine, SessionSpec("cnn", interface.REFERENCE, {}, 0, "cpu", CapturePolicy("full")))
    rec.attach(captured[0])
    base, full = [], []
    timed_block(None, *plain, 1, 5)  # warm-up both paths
    timed_block(rec, *captured, 1, 5)
    for r in range(rounds):
        start = 6 + r * steps
        base += timed_block(None, *plain, start, steps)
        full += timed_block(rec, *captured, start, steps)
    rec.writer.flush()  # every captured gradient was written, not dropped
    rec.close()
    n_params = sum(p.numel() for p in captured[0].parameters())
    return {"params": n_params, "base_ms": 1000 * statistics.median(base), "full_ms": 1000 * statistics.median(full),
            "ratio": statistics.median(full) / statistics.median(base), "blob_bytes": rec.writer.stats.blob_bytes}


def captured_steps(slots: int):
    model, optimizer, spec, loss_fn = make_run()
    loss_fn()[0].backward()
    return model, GradientCapture(model.named_parameters(), CapturePolicy("full"), slots=slots)


def bench_write(engine: sa.Engine, steps: int, rounds: int) -> dict:
    """Alternate writer and raw COPY ``rounds`` times over the same bytes; compare medians."""
    with engine.begin() as conn:
        sid = conn.execute(sa.text("INSERT INTO training_sessions (model_kind, model_name, seed, torch_version, "
                                   "trainsrv_version, device, capture_policy, replay_exact) VALUES ('cnn', 'bench', "
                                   "0, 'x', 'x', 'cpu', 'full', true) RETURNING id")).scalar_one()
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS bench_raw_copy (data bytea NOT NULL)"))
    _, cap = captured_steps(slots=8)
    chunks = [c.data for c in cap.capture(0).encode()]
    total_bytes = steps * sum(len(c) for c in chunks)
    writer_s, raw_s, rows = [], [], 0
    for r in range(rounds):
        writer = BackgroundWriter(engine, sid, max_pending=8)
        t0 = time.perf_counter()
        for step in range(r * steps + 1, (r + 1) * steps + 1):
            writer.submit(StepRecord(step, 1.0, {}, 1.0, 1e-3, list(range(BATCH)), {}, {}, cap.capture(step)))
        writer.close()
        writer_s.append(time.perf_counter() - t0)
        assert writer.stats.blob_bytes == total_bytes  # nothing dropped
        rows += writer.stats.chunks
        raw_s.append(raw_copy(engine, chunks, steps))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE bench_raw_copy"))
    w, rw = statistics.median(writer_s), statistics.median(raw_s)
    return {"bytes": total_bytes, "writer_mb_s": total_bytes / w / 1e6, "raw_mb_s": total_bytes / rw / 1e6,
            "ratio": rw / w, "rows": rows // rounds}


def raw_copy(engine: sa.Engine, chunks: list[bytes], steps: int) -> float:
    t0 = time.perf_counter()
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()
        with cursor, cursor.copy("COPY bench_raw_copy (data) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["bytea"])
            for _ in range(steps):
                for data in chunks:
                    copy.write_row((data,))
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="steps per timing block")
    parser.add_argument("--rounds", type=int, default=5, help="alternating blocks per path")
    parser.add_argument("--write-steps", type=int, default=150, help="steps of gradients written per round")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the writer thread gets the other core, as in a trainer process
    url, server = database()
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        st = bench_step_time(engine, args.steps, args.rounds)
        print(f"reference CNN ({st['params']:,} params, batch {BATCH}, inputs {SPEC_IN.shape()}), CPU:")
        print(f"  step without capture   {st['base_ms']:8.2f} ms (median)")
        print(f"  step with full capture {st['full_ms']:8.2f} ms (median)")
        print(f"  ratio full / none      {st['ratio']:8.3f}   (target <= 1.3)")
        wr = bench_write(engine, args.write_steps, args.rounds)
        print(f"gradient write, {wr['bytes'] / 1e6:.1f} MB in {wr['rows']:,} chunks:")
        print(f"  background writer      {wr['writer_mb_s']:8.1f} MB/s")
        print(f"  raw COPY bytea         {wr['raw_mb_s']:8.1f} MB/s")
        print(f"  ratio writer / raw     {wr['ratio']:8.3f}   (target >= 0.8)")
    finally:
        engine.dispose()
        if server is not None:
            server.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
