"""Gradient capture cost and gradient write throughput (issue 6), each against a same-run baseline.

1. Step time of the reference CNN with ``full`` capture (SessionRecorder: copy, background
   writer, checkpoints off) divided by the step time of the same loop without any recording.
   Blocks of steps alternate between the two (the order swapped every round) so machine noise
   hits both; medians are compared.
2. Gradient write throughput of the background writer (capture into host slots, SHA-256 per
   chunk, one binary COPY of gradient_blobs rows per batch of steps, the step rows by COPY, one
   transaction per batch; the recorder's default WriterOptions) divided by a raw binary COPY of
   the same chunk bytes as bytea into a bare one-column table, in one transaction with the same
   ``synchronous_commit = off``. Writer and raw rounds alternate (order swapped every round);
   the figure is the median of the per-round ratios.

    python bench/bench_capture.py [--steps 40] [--rounds 5] [--write-steps 150] [--write-rounds 9] [--repeat 1]
                                  [--device cpu|cuda] [--channels 32] [--hidden 128]

On CUDA each timed step ends with ``torch.cuda.synchronize()`` on both paths; the gradient write
figure is the same host-side measurement as on CPU.

Uses TRAINSRV_BENCH_DATABASE_URL, or a throw-away embedded PostgreSQL in a temp folder. Prints
the load average before and after each repetition: the machine may be shared.
"""

from __future__ import annotations

import argparse
import contextlib
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
from app.recording.capture import CapturePolicy, GradientCapture  # noqa: E402
from app.recording.optim import OptimizerSpec  # noqa: E402
from app.recording.policy import WriterOptions
from app.recording.session import SessionRecorder, SessionSpec  # noqa: E402
from app.recording.step import Batch, train_step  # noqa: E402
from app.recording.writer import BackgroundWriter, StepRecord  # noqa: E402

SPEC_IN = interface.InputSpec(("1m", "5m", "15m", "1h"), 60)
BATCH = 32


@contextlib.contextmanager
def database():
    """The bench database URL: TRAINSRV_BENCH_DATABASE_URL, or a throw-away embedded server."""
    url = os.environ.get("TRAINSRV_BENCH_DATABASE_URL")
    if url:
        yield normalise_url(url)
        return
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        server = EmbeddedServer(Path(tmp))
        try:
            yield server.acquire()
        finally:
            server.release()


# Set from the command line: the device the step-time bench trains on and the model's size.
DEVICE = torch.device("cpu")
MODEL_CONFIG: dict = {}


def make_run(seed: int = 0):
    torch.manual_seed(seed)
    model = interface.build_model(interface.REFERENCE, SPEC_IN, MODEL_CONFIG).to(DEVICE)
    spec = OptimizerSpec(total_steps=10_000)
    x = torch.randn(BATCH, *SPEC_IN.shape(), device=DEVICE)
    action = torch.randint(0, 3, (BATCH,), device=DEVICE)
    move, prof = torch.randn(BATCH, device=DEVICE), torch.rand(BATCH, device=DEVICE)
    return model, spec.build(model.parameters()), spec, lambda m=model: cnn_loss(m(x), action, move, prof)


def timed_block(recorder, model, optimizer, spec, loss_fn, first_step: int, steps: int) -> list[float]:
    times = []
    for step in range(first_step, first_step + steps):
        t0 = time.perf_counter()
        train_step(recorder, model, optimizer, spec, step, Batch(list(range(BATCH)), {}), loss_fn)
        if DEVICE.type == "cuda":  # a step is done when its kernels are, on both paths
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def bench_step_time(engine: sa.Engine, steps: int, rounds: int) -> dict:
    plain = make_run()
    captured = make_run()
    rec = SessionRecorder.start(
        engine, SessionSpec("cnn", interface.REFERENCE, MODEL_CONFIG, 0, str(DEVICE), CapturePolicy("full"))
    )
    rec.attach(captured[0])
    times: dict[str, list[float]] = {"base": [], "full": []}
    timed_block(None, *plain, 1, 5)  # warm-up both paths
    timed_block(rec, *captured, 1, 5)
    for r in range(rounds):
        start = 6 + r * steps
        for path in ("base", "full") if r % 2 == 0 else ("full", "base"):
            recorder, run = (None, plain) if path == "base" else (rec, captured)
            times[path] += timed_block(recorder, *run, start, steps)
    rec.writer.flush()  # every captured gradient was written, not dropped
    rec.close()
    n_params = sum(p.numel() for p in captured[0].parameters())
    base, full = statistics.median(times["base"]), statistics.median(times["full"])
    return {
        "params": n_params,
        "base_ms": 1000 * base,
        "full_ms": 1000 * full,
        "ratio": full / base,
        "blob_bytes": rec.writer.stats.blob_bytes,
    }


def captured_steps(slots: int):
    model, optimizer, spec, loss_fn = make_run()
    loss_fn()[0].backward()
    return model, GradientCapture(model.named_parameters(), CapturePolicy("full"), slots=slots)


def bench_write(engine: sa.Engine, steps: int, rounds: int) -> dict:
    """Alternate writer and raw COPY ``rounds`` times over the same bytes; median of per-round ratios."""
    with engine.begin() as conn:
        sid = conn.execute(
            sa.text(
                "INSERT INTO training_sessions (model_kind, model_name, seed, torch_version, "
                "trainsrv_version, device, capture_policy, replay_exact) VALUES ('cnn', 'bench', "
                "0, 'x', 'x', 'cpu', 'full', true) RETURNING id"
            )
        ).scalar_one()
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS bench_raw_copy (data bytea NOT NULL)"))
    options = WriterOptions()
    _, cap = captured_steps(slots=options.slots)
    first = cap.capture(0)
    chunks = [c.data for c in first.encode()]
    first.release()
    total_bytes = steps * sum(len(c) for c in chunks)
    writer_s, raw_s, rows = [], [], 0
    for r in range(rounds):
        for path in ("writer", "raw") if r % 2 == 0 else ("raw", "writer"):
            if path == "raw":
                raw_s.append(raw_copy(engine, chunks, steps))
                continue
            seconds, stats = writer_round(engine, sid, cap, options, r * steps + 1, steps)
            assert stats.blob_bytes == total_bytes  # nothing dropped
            writer_s.append(seconds)
            rows += stats.chunks
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE bench_raw_copy"))
    w, rw = statistics.median(writer_s), statistics.median(raw_s)
    return {
        "bytes": total_bytes,
        "writer_mb_s": total_bytes / w / 1e6,
        "raw_mb_s": total_bytes / rw / 1e6,
        "ratio": statistics.median(b / a for a, b in zip(writer_s, raw_s)),
        "rows": rows // rounds,
    }


def writer_round(
    engine: sa.Engine, sid: int, cap: GradientCapture, options: WriterOptions, first: int, steps: int
) -> tuple[float, object]:
    """Capture and write ``steps`` steps through a fresh writer; seconds until all are committed."""
    writer = BackgroundWriter(engine, sid, max_pending=options.max_pending, max_batch=options.max_batch)
    t0 = time.perf_counter()
    for step in range(first, first + steps):
        writer.submit(StepRecord(step, 1.0, {}, 1.0, 1e-3, list(range(BATCH)), {}, {}, cap.capture(step)))
    writer.close()
    return time.perf_counter() - t0, writer.stats


def raw_copy(engine: sa.Engine, chunks: list[bytes], steps: int) -> float:
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL synchronous_commit = off"))  # as the writer's transactions
        cursor = conn.connection.driver_connection.cursor()
        with cursor, cursor.copy("COPY bench_raw_copy (data) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["bytea"])
            for _ in range(steps):
                for data in chunks:
                    copy.write_row((data,))
    return time.perf_counter() - t0


def _device_name() -> str:
    return torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "CPU"


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_once(engine: sa.Engine, args) -> tuple[dict, dict]:
    print(f"[{load()}]")
    st = bench_step_time(engine, args.steps, args.rounds)
    target = 1.15 if DEVICE.type == "cuda" else 1.3
    print(
        f"reference CNN {str(MODEL_CONFIG) + ' ' if MODEL_CONFIG else ''}({st['params']:,} params, batch {BATCH}, inputs {SPEC_IN.shape()}), "
        f"{_device_name()}:"
    )
    print(f"  step without capture   {st['base_ms']:8.2f} ms (median)")
    print(f"  step with full capture {st['full_ms']:8.2f} ms (median)")
    print(f"  ratio full / none      {st['ratio']:8.3f}   (target <= {target})")
    wr = bench_write(engine, args.write_steps, args.write_rounds)
    print(f"gradient write, {wr['bytes'] / 1e6:.1f} MB in {wr['rows']:,} chunks per round:")
    print(f"  background writer      {wr['writer_mb_s']:8.1f} MB/s (median)")
    print(f"  raw COPY bytea         {wr['raw_mb_s']:8.1f} MB/s (median)")
    print(f"  ratio writer / raw     {wr['ratio']:8.3f}   (median of rounds; target >= 0.8)")
    print(f"[{load()}]")
    return st, wr


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="steps per timing block")
    parser.add_argument("--rounds", type=int, default=5, help="alternating blocks per path")
    parser.add_argument("--write-steps", type=int, default=150, help="steps of gradients written per round")
    parser.add_argument("--write-rounds", type=int, default=9, help="alternating writer / raw rounds")
    parser.add_argument("--repeat", type=int, default=1, help="run everything this many times; medians at the end")
    parser.add_argument("--device", default="cpu", help="device of the step-time bench: cpu or cuda")
    parser.add_argument("--channels", type=int, help="reference CNN channels per tower (default 32)")
    parser.add_argument("--hidden", type=int, help="reference CNN trunk width (default 128)")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    MODEL_CONFIG.update({k: v for k, v in (("channels", args.channels), ("hidden", args.hidden)) if v})
    if DEVICE.type == "cpu":
        torch.set_num_threads(1)  # the writer thread gets the other core, as in a trainer process
    with database() as url:
        engine = make_engine(url)
        try:
            migrate.upgrade(engine)
            results = [run_once(engine, args) for _ in range(args.repeat)]
        finally:
            engine.dispose()
    if args.repeat > 1:
        step = statistics.median(st["ratio"] for st, _ in results)
        write = statistics.median(wr["ratio"] for _, wr in results)
        target = 1.15 if DEVICE.type == "cuda" else 1.3
        print(f"median of {args.repeat} runs: step ratio {step:.3f} (<= {target}), write ratio {write:.3f} (>= 0.8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
