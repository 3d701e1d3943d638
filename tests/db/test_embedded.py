"""The embedded server: fresh start, restart, stale files after kills, shared data dirs, SIGTERM."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
import sqlalchemy as sa

from app.db.embedded import EmbeddedServer
from tests.embedded_dirs import reachable


def _scalar(url, sql):
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(sql))
            return result.scalar() if result.returns_rows else None
    finally:
        engine.dispose()


@pytest.fixture
def server(tmp_path):
    srv = EmbeddedServer(reachable(tmp_path) / "data")
    yield srv
    srv.release()
    srv.stop()


def test_fresh_dir_starts_with_pgvector(server):
    url = server.acquire()
    assert _scalar(url, "SELECT current_setting('server_version_num')::int") >= 180000
    _scalar(url, "CREATE EXTENSION IF NOT EXISTS vector")
    assert _scalar(url, "SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector") == 1.0


def test_data_survives_restart(server):
    url = server.acquire()
    _scalar(url, "CREATE TABLE kept AS SELECT 42 AS answer")
    server.release()
    assert server._running_pid() is None
    url = server.acquire()
    assert _scalar(url, "SELECT answer FROM kept") == 42


def test_restart_after_kill_with_stale_pidfile(server):
    url = server.acquire()
    _scalar(url, "CREATE TABLE kept AS SELECT 7 AS answer")
    pid = server._running_pid()
    os.kill(pid, signal.SIGKILL)
    psutil.wait_procs([psutil.Process(pid)] if psutil.pid_exists(pid) else [], timeout=10)
    _wait_for_children_to_exit(server)
    # Point the stale pid file at a live process that is not PostgreSQL (pid reuse after a reboot).
    pidfile = server.pgdata / "postmaster.pid"
    lines = pidfile.read_text().splitlines()
    lines[0] = str(os.getpid())
    pidfile.write_text("\n".join(lines) + "\n")
    server._registered = False
    url = server.acquire()
    assert _scalar(url, "SELECT answer FROM kept") == 7


def _wait_for_children_to_exit(server, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [
            p
            for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "postgres" and str(server.pgdata) in " ".join(p.info["cmdline"] or [])
        ]
        if not alive:
            return
        time.sleep(0.2)


HOLDER = textwrap.dedent("""
    import sys, time, signal
    from app import cli
    from app.db.embedded import EmbeddedServer
    signal.signal(signal.SIGTERM, cli._exit_on_sigterm)
    EmbeddedServer(sys.argv[1]).acquire()
    print("ready", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def _holder(data_dir, seconds):
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(data_dir), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_last_user_stops_the_server_and_others_keep_it(tmp_path):
    data = reachable(tmp_path) / "data"
    a = _holder(data, 60)
    b = _holder(data, 0)
    b.wait(timeout=30)
    watcher = EmbeddedServer(data)
    assert watcher._running_pid() is not None, "server stopped while another process still used it"
    a.send_signal(signal.SIGTERM)
    assert a.wait(timeout=30) != 0
    assert watcher._running_pid() is None, "SIGTERM of the last user did not stop the server"


def test_killed_user_does_not_keep_the_server_forever(tmp_path):
    data = reachable(tmp_path) / "data"
    victim = _holder(data, 60)
    victim.kill()
    victim.wait()
    server = EmbeddedServer(data)
    assert server._running_pid() is not None  # left running by the SIGKILL
    server.acquire()
    assert victim.pid not in server.live_handles()
    server.release()
    assert server._running_pid() is None
