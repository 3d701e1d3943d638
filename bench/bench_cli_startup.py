"""Start-up time of trainsrv commands that need no model, against `python -c pass` in the same run.

Each command is run as a fresh process ``--runs`` times, interleaved with the baseline (``python -c pass``)
and with ``python -c "import torch"`` (what every command paid before the CLI stopped importing torch);
medians are printed with their ratio to the baseline. Commands that read the database use one embedded
server (kept up by a process of this script) or ``TRAINSRV_BENCH_DATABASE_URL``. Finally
``-X importtime`` of ``trainsrv stats`` is scanned for torch.

    python bench/bench_cli_startup.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_database, machine  # noqa: E402

COMMANDS = [
    ["--version"],
    ["--help"],
    ["db", "url"],
    ["jobs", "kinds"],
    ["db", "current"],
    ["stats"],
    ["jobs", "list"],
    ["sessions", "list"],
]


def _time(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.stderr[-500:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with bench_database() as url:
        env = {**os.environ, "TRAINSRV_DATABASE_URL": url, "LC_ALL": "C.UTF-8"}
        py = [sys.executable]
        cases = {"python -c pass": py + ["-c", "pass"], "python -c 'import torch'": py + ["-c", "import torch"]}
        cases.update({"trainsrv " + " ".join(c): py + ["-m", "app.cli", *c] for c in COMMANDS})
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, argv in cases.items():  # interleaved: load changes hit every case alike
                times[name].append(_time(argv, env))
        base = statistics.median(times["python -c pass"])
        print(f"machine: {machine()}; {args.runs} runs each, interleaved; load average {os.getloadavg()[0]:.1f}")
        print(f"{'command':<34} {'median s':>9} {'÷ python -c pass':>17}")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:<34} {median:>9.3f} {median / base:>16.1f}×")
        trace = subprocess.run(
            py + ["-X", "importtime", "-m", "app.cli", "stats"], env=env, capture_output=True, text=True
        )
        torch_lines = [line for line in trace.stderr.splitlines() if line.rstrip().endswith("| torch")]
        print("-X importtime of `trainsrv stats`: " + ("imports torch!" if torch_lines else "no torch"))


if __name__ == "__main__":
    main()
