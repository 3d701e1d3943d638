"""Queue test fixtures: short timings via the environment, test job kinds, worker processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import config
from app.paths import REPO_ROOT
from tests.jobs import handlers

# Short heartbeats, polls and backoffs keep rescue and retry tests quick; scheduling is off so
# only the jobs a test enqueues exist.
FAST = {
    "TRAINSRV_HEARTBEAT_INTERVAL_S": "0.2",
    "TRAINSRV_HEARTBEAT_TIMEOUT_S": "1.5",
    "TRAINSRV_POLL_INTERVAL_S": "0.5",
    "TRAINSRV_RETRY_BACKOFF_BASE_S": "0.05",
    "TRAINSRV_RETRY_BACKOFF_MAX_S": "0.2",
    "TRAINSRV_HANDLER_MODULES": "tests.jobs.handlers",
    "TRAINSRV_ENABLE_BACKGROUND_VALIDATION": "false",
}


@pytest.fixture
def fast_env(db_url, monkeypatch) -> dict[str, str]:
    """The environment of this test's trainer processes (also applied to this process)."""
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    config.set_settings(None)
    return {**FAST, "TRAINSRV_DATABASE_URL": db_url}


@pytest.fixture
def settings(fast_env) -> config.Settings:
    return config.get_settings()


@pytest.fixture
def jobs_engine(engine, fast_env) -> sa.Engine:
    handlers.create_tables(engine)
    return engine


class WorkerProcess:
    """``trainsrv serve`` as a child process; its JSON lines go to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSRV_")}
        full_env.update(env)
        full_env.setdefault("LC_ALL", "C.UTF-8")
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--no-schedule", *args],
            env=full_env,
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.PIPE,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def events(self) -> list[dict]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.poll() is not None else ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def workers(fast_env, tmp_path):
    """Start trainer processes with ``workers(*serve_args)``; any left running are killed."""
    started: list[WorkerProcess] = []

    def start(*args: str, env: dict | None = None) -> WorkerProcess:
        proc = WorkerProcess({**fast_env, **(env or {})}, tmp_path / f"worker{len(started)}.jsonl", *args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (a liveness bound, not a timing check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def scalar(engine: sa.Engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()
