"""A very large candle CSV is streamed with bounded memory.

The file is generated in tmp (valid 1-minute candles) and loaded by ``trainsrv ingest candles`` in
a child process that reports its own peak RSS: the loader's memory must not grow with the file.
The default run uses 2 million rows (~100 MB, well under a minute); set
``TRAINSRV_TEST_CSV_ROWS=10000000`` for the 10-million-row run recorded in docs/reliability.md.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest

from app.paths import REPO_ROOT
from tests.reliability.support import scalar

pytestmark = pytest.mark.slow

ROWS = int(os.environ.get("TRAINSRV_TEST_CSV_ROWS", "2000000"))
# The loader may hold this much more than the interpreter with its imports; the file is far larger.
MAX_GROWTH_MB = 64

# Peak RSS is read from VmHWM (per address space, so it starts fresh at exec): ru_maxrss would
# report the forking parent's size when that is larger.
CHILD = """
import json, re, sys
import psutil
from app.db.engine import make_engine
from app.ingest.candles import ingest_candles

def peak_mb():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024

engine = make_engine(sys.argv[1])
before = psutil.Process().memory_info().rss / 2**20  # now, after the imports
report = ingest_candles(engine, sys.argv[2], "BIG", "1m", progress=False)
print(json.dumps({"loaded": report.loaded, "rejected": report.rejected, "elapsed_s": report.elapsed_s,
                  "rss_before_mb": before, "rss_peak_mb": peak_mb()}))
"""


def write_candles(path, rows: int) -> None:
    """``rows`` valid consecutive 1-minute candles, written in blocks (the generator holds one block)."""
    start = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    minutes = [f"T{h:02d}:{m:02d}:00" for h in range(24) for m in range(60)]
    with open(path, "w") as f:
        f.write("timestamp,open,high,low,close,volume\n")
        for day in range(0, (rows + 1439) // 1440):
            date = (start + dt.timedelta(days=day)).strftime("%Y-%m-%d")
            block = []
            for m in range(min(1440, rows - day * 1440)):
                p = 100 + (day * 1440 + m) % 997 * 0.01
                block.append(f"{date}{minutes[m]},{p:.2f},{p + 0.5:.2f},{p - 0.5:.2f},{p + 0.1:.2f},{m % 89 + 1}\n")
            f.write("".join(block))


def test_a_huge_csv_loads_with_bounded_memory(engine, db_url, tmp_path):
    path = tmp_path / "candles.csv"
    write_candles(path, ROWS)
    size_mb = path.stat().st_size / 1e6
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, db_url, str(path)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n{ROWS} rows, {size_mb:.0f} MB: {figures}")
    assert figures["loaded"] == ROWS and figures["rejected"] == 0
    assert scalar(engine, "SELECT count(*) FROM candles WHERE symbol = 'BIG'") == ROWS
    # The default file (102 MB) is far bigger than the bound: a loader that held it would fail here.
    assert figures["rss_peak_mb"] - figures["rss_before_mb"] < MAX_GROWTH_MB, figures
