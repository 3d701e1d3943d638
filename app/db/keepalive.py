"""Keep the embedded server up between trainsrv commands, for psql, Grafana and notebooks.

The embedded server stops when the last trainsrv process using its data dir exits. ``trainsrv db start``
starts a small holder process (``python -m app.db.keepalive DATA_DIR``) that registers like any other
trainsrv process and waits; ``trainsrv db stop`` ends it with SIGTERM, and the server then stops as soon
as no other trainsrv process uses it. The holder's pid is in ``DATA_DIR/keepalive.pid``. Nothing here
changes how the server itself starts or authenticates (app/db/embedded.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from app.db.embedded import EmbeddedServer
from app.errors import DatabaseUnavailable

PID_FILE = "keepalive.pid"
LOG_FILE = "keepalive.log"


def holder_pid(data_dir: Path) -> int | None:
    """The running holder's pid for ``data_dir``, or None (a stale pid file is ignored)."""
    try:
        pid = int((Path(data_dir) / PID_FILE).read_text().strip())
        proc = psutil.Process(pid)
        if "app.db.keepalive" in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
            return pid
    except (FileNotFoundError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        pass
    return None


def start(data_dir: Path, timeout_s: float = 90.0) -> tuple[int, bool]:
    """Start the holder unless one runs; returns (its pid, whether it was started now)."""
    data_dir = Path(data_dir).expanduser().resolve()
    pid = holder_pid(data_dir)
    if pid is not None:
        return pid, False
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / PID_FILE).unlink(missing_ok=True)
    with open(data_dir / LOG_FILE, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.db.keepalive", str(data_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            cwd="/",
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DatabaseUnavailable(f"the keep-alive process exited ({proc.returncode}); see {data_dir / LOG_FILE}")
        if holder_pid(data_dir) == proc.pid:
            return proc.pid, True
        time.sleep(0.1)
    proc.terminate()
    raise DatabaseUnavailable(f"the embedded server did not start within {timeout_s:.0f} s; see {data_dir / LOG_FILE}")


def stop(data_dir: Path, timeout_s: float = 90.0) -> bool:
    """End the holder (False when none ran); the server stops once no other trainsrv process uses it."""
    pid = holder_pid(data_dir)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    try:
        psutil.Process(pid).wait(timeout=timeout_s)
    except psutil.NoSuchProcess:
        pass
    except psutil.TimeoutExpired:
        raise DatabaseUnavailable(f"keep-alive process {pid} did not exit within {timeout_s:.0f} s") from None
    return True


def _hold(data_dir: Path) -> None:
    server = EmbeddedServer(data_dir)
    server.acquire()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    tmp = server.data_dir / (PID_FILE + ".tmp")
    tmp.write_text(str(os.getpid()))
    tmp.replace(server.data_dir / PID_FILE)  # written only once the server is up: start() waits for it
    try:
        while not stopping:
            signal.pause()
    finally:
        (server.data_dir / PID_FILE).unlink(missing_ok=True)
        server.release()


if __name__ == "__main__":
    _hold(Path(sys.argv[1]))
