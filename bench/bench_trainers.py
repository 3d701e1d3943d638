"""Many trainers, one database (issue 20): 1, 2 and 4 trainer processes capturing full gradients at once.

Each trainer is its own process with its own session, recorder and background writer (as
``trainsrv serve`` processes on one host would be). Two modes, each at 1, 2 and 4 processes:

* ``train``: the reference CNN's training steps with ``full`` capture (``app.recording.step.train_step``);
  per-trainer median step time ÷ the single trainer's, and aggregate gradient bytes/s;
* ``write``: the same gradients captured and written as fast as the writer takes them, no forward or
  backward (the database path alone): aggregate gradient bytes/s, and ÷ the single writer's.

Processes start together (a shared event after their warm-up); the aggregate rate is all bytes
committed ÷ (last commit - first start). Where the aggregate stops growing with more processes, the
shared resource (database or CPU) is the bottleneck; compare with the cores available.

    python bench/bench_trainers.py [--steps 40] [--write-steps 200] [--counts 1,2,4] [--modes train,write]
                                   [--device cpu|cuda] [--channels N] [--hidden N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_capture as bc  # noqa: E402
from bench.common import _autocommit, machine  # noqa: E402


def worker(url: str, mode: str, steps: int, model_config: dict, device: str, ready, start, out) -> None:
    """One trainer process: warm up, wait for ``start``, run ``steps`` captured steps, report."""
    import torch
    from sqlalchemy.engine import make_url  # noqa: F401 - keeps import time out of the timed part

    from app.db.engine import make_engine
    from app.nets import interface
    from app.recording.capture import CapturePolicy
    from app.recording.session import SessionRecorder, SessionSpec
    from app.recording.step import Batch, train_step
    from app.recording.writer import StepRecord

    torch.set_num_threads(1)
    bc.DEVICE = torch.device(device)
    bc.MODEL_CONFIG.update(model_config)
    engine = make_engine(url)
    model, optimizer, spec, loss_fn = bc.make_run(seed=os.getpid() % 1000)
    rec = SessionRecorder.start(
        engine, SessionSpec("cnn", interface.REFERENCE, model_config, 0, device, CapturePolicy("full"))
    )
    rec.attach(model)
    batch = Batch(list(range(bc.BATCH)), {})
    for step in range(1, 4):  # warm-up, recorded like the rest
        train_step(rec, model, optimizer, spec, step, batch, loss_fn)
    rec.writer.flush()
    written_before = rec.writer.stats.blob_bytes
    ready.release()
    start.wait()
    began, times = time.time(), []
    for step in range(4, 4 + steps):
        t0 = time.perf_counter()
        if mode == "train":
            train_step(rec, model, optimizer, spec, step, batch, loss_fn)
        else:  # the gradients of the warm-up's last backward, captured and written again
            rec.record_step(StepRecord(step, 1.0, {}, 1.0, 1e-3, batch.ids, {}, {}, rec.capture(step)))
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    rec.writer.flush()
    ended = time.time()
    out.put(
        {
            "began": began,
            "ended": ended,
            "step_s": statistics.median(times),
            "bytes": rec.writer.stats.blob_bytes - written_before,
            "write_s": rec.writer.stats.write_s,
        }
    )
    rec.close()
    engine.dispose()


def run(url: str, mode: str, count: int, args) -> dict:
    ctx = mp.get_context("spawn")
    ready, start, out = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    model_config = {k: v for k, v in (("channels", args.channels), ("hidden", args.hidden)) if v}
    steps = args.steps if mode == "train" else args.write_steps
    procs = [
        ctx.Process(target=worker, args=(url, mode, steps, model_config, args.device, ready, start, out))
        for _ in range(count)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    start.set()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    wall = max(r["ended"] for r in results) - min(r["began"] for r in results)
    total = sum(r["bytes"] for r in results)
    step_ms = 1000 * statistics.median(r["step_s"] for r in results)
    return {"count": count, "mb_s": total / wall / 1e6, "step_ms": step_ms, "mb": total / 1e6, "wall_s": wall}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40, help="training steps per trainer (mode train)")
    p.add_argument("--write-steps", type=int, default=200, help="steps written per trainer (mode write)")
    p.add_argument("--counts", default="1,2,4")
    p.add_argument("--modes", default="train,write")
    p.add_argument("--device", default="cpu")
    p.add_argument("--channels", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    args = p.parse_args(argv)
    print(machine())
    print(f"[load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}]")
    from sqlalchemy.engine import make_url

    from app.db import migrate
    from app.db.engine import make_engine

    with bc.database() as admin:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        _autocommit(admin, f'CREATE DATABASE "{name}"')
        url = make_url(admin).set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        try:
            for mode in args.modes.split(","):
                rows = [run(url, mode, int(n), args) for n in args.counts.split(",")]
                report(mode, rows, args)
        finally:
            _autocommit(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"[load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}]")
    return 0


def report(mode: str, rows: list[dict], args) -> None:
    single = rows[0]
    steps = args.steps if mode == "train" else args.write_steps
    print(f"mode {mode}, {steps} steps per trainer, device {args.device}:")
    for r in rows:
        print(
            f"  {r['count']} trainer(s): aggregate {r['mb_s']:8.1f} MB/s "
            f"({r['mb_s'] / single['mb_s']:5.2f}x single)  "
            f"step {r['step_ms']:8.2f} ms ({r['step_ms'] / single['step_ms']:5.2f}x single)  "
            f"{r['mb']:.1f} MB in {r['wall_s']:.2f} s"
        )


if __name__ == "__main__":
    raise SystemExit(main())
