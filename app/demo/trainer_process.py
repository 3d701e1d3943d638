"""The demo's trainer: a real ``trainsrv serve`` process (its scheduler on or off)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import sqlalchemy as sa

from app.errors import TrainsrvError
from app.jobs import queue

TERMINAL = ("succeeded", "failed", "cancelled")


class TrainerProcess:
    """Starts ``trainsrv serve`` against ``url`` and stops it with SIGTERM (a clean shutdown)."""

    def __init__(self, url: str, log_path: str, schedule: bool = False, env: dict[str, str] | None = None):
        # stdout (job transitions) and stderr (the log) share one file: JSON lines for both.
        env = {
            **os.environ,
            **(env or {}),
            "TRAINSRV_DATABASE_URL": url,
            "LC_ALL": os.environ.get("LC_ALL", "C.UTF-8"),
            "TRAINSRV_LOG_FORMAT": "json",
        }
        self._log = open(log_path, "ab")
        args = ["serve"] if schedule else ["serve", "--no-schedule"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def stop(self, timeout_s: float = 120) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def __enter__(self) -> TrainerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def enqueue(engine: sa.Engine, kind: str, **params) -> int:
    with engine.begin() as conn:
        return queue.enqueue(conn, kind, params).id


def wait_for(
    engine: sa.Engine,
    job_ids: list[int],
    trainer: TrainerProcess,
    on_poll: Callable[[], None] = lambda: None,
    poll_s: float = 0.5,
) -> list[dict]:
    """Block until every job is terminal; a failed job or a dead trainer is a TrainsrvError."""
    while True:
        with engine.connect() as conn:
            jobs = [queue.get(conn, job_id) for job_id in job_ids]
        failed = [j for j in jobs if j["state"] in ("failed", "cancelled")]
        if failed:
            first = (failed[0].get("last_error") or "").splitlines()[:1]
            raise TrainsrvError(
                f"job {failed[0]['id']} ({failed[0]['kind']}) {failed[0]['state']}: "
                f"{first[0] if first else 'no error recorded'}"
            )
        if all(j["state"] == "succeeded" for j in jobs):
            return jobs
        if trainer.proc.poll() is not None:
            raise TrainsrvError(f"the trainer process exited with code {trainer.proc.returncode}; see its log")
        on_poll()
        time.sleep(poll_s)
