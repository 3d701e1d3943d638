"""Shared helpers of the reliability tests: trainer processes, waiting, database facts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from app.paths import REPO_ROOT

# Quick heartbeats, rescue and retries so that kill / restart scenarios finish in seconds.
FAST_ENV = {
    "TRAINSRV_HEARTBEAT_INTERVAL_S": "0.2",
    "TRAINSRV_HEARTBEAT_TIMEOUT_S": "1.5",
    "TRAINSRV_POLL_INTERVAL_S": "0.2",
    "TRAINSRV_RETRY_BACKOFF_BASE_S": "0.05",
    "TRAINSRV_RETRY_BACKOFF_MAX_S": "0.2",
    "TRAINSRV_ENABLE_BACKGROUND_VALIDATION": "false",
}


class Trainer:
    """``trainsrv serve --no-schedule`` as a child process; its JSON event lines go to a file."""

    def __init__(self, url: str, log_path: Path, env: dict[str, str] | None = None):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSRV_")}
        full_env.update(FAST_ENV, TRAINSRV_DATABASE_URL=url, LC_ALL="C.UTF-8", **(env or {}))
        self.log_path = log_path
        self._log = open(log_path, "w")
        self._err_path = log_path.with_suffix(".err")
        self._err = open(self._err_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--no-schedule"],
            env=full_env,
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=self._err,
        )

    def events(self) -> list[dict]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def stderr(self) -> str:
        return self._err_path.read_text()

    def kill9(self) -> None:
        self.proc.kill()  # SIGKILL
        self.proc.wait(timeout=30)
        self._close()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        if not self._log.closed:
            self._log.close()
            self._err.close()


def wait_for(predicate, timeout: float = 120.0, what: str = "condition", alive: Trainer | None = None):
    """Poll until ``predicate()`` is truthy (a liveness bound, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if alive is not None and alive.proc.poll() is not None:
            raise AssertionError(
                f"the trainer exited ({alive.proc.returncode}) while waiting for {what}:\n{alive.stderr()[-3000:]}"
            )
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def scalar(engine: sa.Engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def table_digest(engine: sa.Engine) -> dict[str, tuple]:
    """Row count and an order-independent content hash of every trainsrv table."""
    tables = [
        "candles",
        "input_packages",
        "predictions",
        "outcomes",
        "market_events",
        "experiences",
        "jobs",
        "training_sessions",
        "training_steps",
        "gradient_blobs",
        "checkpoints",
    ]
    out = {}
    with engine.connect() as conn:
        for table in tables:  # fixed names from this list
            out[table] = tuple(
                conn.execute(
                    sa.text(
                        f"SELECT count(*), coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))), '') "
                        f"FROM {table} t"
                    )
                ).one()
            )
    return out
