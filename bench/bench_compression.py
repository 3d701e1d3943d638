"""Lossless compression of real gradients (issue 20): byte-shuffled float32 + zstd / lz4, against storing raw.

Trains a CNN session (real BTC-PERP candles, the reference CNN) and an RL session (real experiences, the
reference DQN) with full capture, reads every stored raw gradient back, and for each codec measures on
each step's gradients (all parameters):

* ratio: raw bytes ÷ compressed bytes (over all steps);
* compress and decompress speed, MB/s of raw bytes, shuffle included, one thread;
* that the round trip returns the same bytes (exact replay needs bit-exactness).

The same run measures a raw binary COPY of the gradient bytes into a bare bytea table (the write path's
ceiling, ``bench_capture.raw_copy``). Compression pays for writes when compressing a byte costs less than
writing the bytes it saves: 1 / compress_MB_s < (1 - 1 / ratio) / copy_MB_s; the script prints that
break-even compress speed.

    python bench/bench_compression.py [--cnn-epochs 6] [--rl-steps 40] [--zstd-levels 1,3]

Needs ``zstandard`` and ``lz4`` (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import lz4.frame
import numpy as np
import sqlalchemy as sa
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.db.engine import make_engine  # noqa: E402
from app.demo import candle_episodes as support  # noqa: E402
from app.trainer import cnn_train, rl_train  # noqa: E402
from bench import bench_capture as bc  # noqa: E402
from bench.common import bench_database, machine  # noqa: E402
from tests.rl_replay import support as rl_support  # noqa: E402

CANDLES = (
    Path(__file__).resolve().parent.parent.parent
    / "shared"
    / "data"
    / "nautilus-ftx-btc-perp-1m"
    / "btc-perp-20211231-20220201_1m.csv"
)
STEP_BYTES = (
    "SELECT step, string_agg(data, ''::bytea ORDER BY param_name, chunk_index) AS data "
    "FROM gradient_blobs WHERE session_id = :s AND codec = 'raw' AND dtype = 'float32' "
    "GROUP BY step ORDER BY step"
)


def shuffle(raw: bytes) -> bytes:
    """float32 bytes regrouped by byte position (all first bytes, then all second, ...): exponents together."""
    return np.frombuffer(raw, dtype=np.uint8).reshape(-1, 4).T.tobytes()


def unshuffle(data: bytes) -> bytes:
    return np.frombuffer(data, dtype=np.uint8).reshape(4, -1).T.tobytes()


def codecs(levels: list[int]) -> dict:
    """name -> (compress, decompress) over one step's float32 bytes."""
    out = {}
    for level in levels:
        cctx, dctx = zstandard.ZstdCompressor(level=level), zstandard.ZstdDecompressor()
        out[f"zstd-{level}"] = (cctx.compress, dctx.decompress)
        out[f"shuffle+zstd-{level}"] = (
            lambda b, c=cctx: c.compress(shuffle(b)),
            lambda b, d=dctx: unshuffle(d.decompress(b)),
        )
    out["lz4"] = (lz4.frame.compress, lz4.frame.decompress)
    out["shuffle+lz4"] = (lambda b: lz4.frame.compress(shuffle(b)), lambda b: unshuffle(lz4.frame.decompress(b)))
    return out


def measure(steps: list[bytes], compress, decompress, repeats: int = 3) -> dict:
    """Ratio, and the median compress / decompress speed over ``repeats`` passes over every step."""
    raw = sum(len(s) for s in steps)
    c_s, d_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        packed = [compress(s) for s in steps]
        t1 = time.perf_counter()
        back = [decompress(p) for p in packed]
        c_s.append(t1 - t0)
        d_s.append(time.perf_counter() - t1)
        assert back == steps, "round trip changed the bytes"
    return {
        "ratio": raw / sum(len(p) for p in packed),
        "compress_mb_s": raw / statistics.median(c_s) / 1e6,
        "decompress_mb_s": raw / statistics.median(d_s) / 1e6,
    }


def train(engine: sa.Engine, args) -> dict[str, int]:
    support.build_episodes(engine, CANDLES, minutes=900)
    cnn = cnn_train.train_cnn(
        engine,
        cnn_train.CnnTrainOptions(
            symbol=support.SYMBOL,
            min_profitability=0.0,
            max_episodes=128,
            epochs=args.cnn_epochs,
            batch_size=32,
            checkpoint_every=50,
            seed=1,
            device="cpu",
        ),
    )
    rl_support.real_experiences(engine, CANDLES, candles=1700)
    rl = rl_train.train_rl(
        engine,
        rl_train.RlTrainOptions(
            symbol=rl_support.SYMBOL, steps=args.rl_steps, batch_size=32, checkpoint_every=50, seed=1, device="cpu"
        ),
    )
    return {"cnn": cnn["session_id"], "rl": rl["session_id"]}


def step_bytes(engine: sa.Engine, sid: int) -> list[bytes]:
    with engine.connect() as conn:
        return [bytes(r.data) for r in conn.execute(sa.text(STEP_BYTES), {"s": sid})]


def copy_mb_s(engine: sa.Engine, steps: list[bytes], rounds: int = 3) -> float:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS bench_raw_copy (data bytea NOT NULL)"))
    seconds = [bc.raw_copy(engine, steps, 1) for _ in range(rounds)]
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE bench_raw_copy"))
    return sum(len(s) for s in steps) / statistics.median(seconds) / 1e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cnn-epochs", type=int, default=6)
    p.add_argument("--rl-steps", type=int, default=40)
    p.add_argument("--zstd-levels", default="1,3")
    args = p.parse_args(argv)
    print(machine())
    print(f"[load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}]")
    with bench_database() as url:
        engine = make_engine(url)
        sessions = train(engine, args)
        for kind, sid in sessions.items():
            steps = step_bytes(engine, sid)
            copy = copy_mb_s(engine, steps)
            print(
                f"{kind} session {sid}: {len(steps)} steps x {len(steps[0]) / 1e3:.1f} kB of float32 gradients; "
                f"raw COPY {copy:.1f} MB/s"
            )
            for name, (c, d) in codecs([int(x) for x in args.zstd_levels.split(",")]).items():
                m = measure(steps, c, d)
                need = copy / (1 - 1 / m["ratio"]) if m["ratio"] > 1 else float("inf")
                print(
                    f"  {name:<16} ratio {m['ratio']:6.3f}  compress {m['compress_mb_s']:8.1f} MB/s  "
                    f"decompress {m['decompress_mb_s']:8.1f} MB/s  break-even compress {need:8.1f} MB/s  exact"
                )
        engine.dispose()
    print(f"[load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
