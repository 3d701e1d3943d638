"""What lands in files and pipes: no progress-bar frames, one log format per stream, a quiet closed pipe."""

import json
import subprocess
import sys

from tests.e2e import cli
from tests.embedded_dirs import reachable


def test_no_progress_bar_into_a_pipe(tmp_path, real_candles_path):
    env = {"TRAINSRV_DATA_DIR": str(reachable(tmp_path) / "data")}
    cli.run("db", "upgrade", env=env, check=True)
    result = cli.run(
        "ingest", "candles", str(real_candles_path), "--symbol", "BTC-PERP", "--timeframe", "1m", env=env, check=True
    )
    assert "\r" not in result.stderr and "B/s" not in result.stderr, result.stderr[:300]


def test_the_demo_trainer_log_is_json_lines_only(demo):
    env, summary, data_dir = demo
    lines = [line for line in open(summary["trainer_log"]).read().splitlines() if line.strip()]
    assert lines
    for line in lines:
        json.loads(line)  # job transitions and log records alike


def test_a_closed_pipe_ends_quietly(demo):
    env, summary, data_dir = demo
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "sessions", "show", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**cli.clean_env(), **env},
    )
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141) and "Traceback" not in stderr and "BrokenPipe" not in stderr
