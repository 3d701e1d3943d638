"""The embedded server is the owner's alone (issue 18): owner-only socket folder wherever it lives, no
trust authentication for other local users, no parent folder's mode changed."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.db.embedded import PORT, SYSTEM_USER, EmbeddedServer, bin_dir
from app.errors import DatabaseUnavailable
from tests.embedded_dirs import reachable

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (another local user connects)")

OTHER_USER = "nobody"


def _deep(base: Path) -> Path:
    """A data dir whose socket path is too long for the folder itself (the /tmp fallback)."""
    return reachable(base / ("d" * 60) / ("e" * 60)) / "data"


@pytest.fixture
def deep_server(tmp_path):
    server = EmbeddedServer(_deep(tmp_path))
    yield server
    server.release()
    server.stop()


def _as_other_user(socket_dir: Path) -> subprocess.CompletedProcess:
    """psql as another local user, to the server's socket, as the superuser role."""
    return subprocess.run(
        [
            str(bin_dir() / "psql"),
            "-h",
            str(socket_dir),
            "-p",
            str(PORT),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-w",
            "-Atc",
            "SELECT 'in as ' || current_user",
        ],
        user=OTHER_USER,
        group=pwd.getpwnam(OTHER_USER).pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )


def test_the_fallback_socket_folder_is_owner_only(deep_server):
    url = deep_server.acquire()
    sock = deep_server.socket_dir()
    assert sock != deep_server.pgdata and str(sock).startswith("/tmp/")
    st = sock.lstat()
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == pwd.getpwnam(SYSTEM_USER).pw_uid
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    engine.dispose()
    refused = _as_other_user(sock)
    assert refused.returncode != 0 and "in as" not in refused.stdout


def test_another_local_user_is_refused_even_at_the_socket(deep_server):
    deep_server.acquire()
    sock = deep_server.socket_dir()
    sock.chmod(0o755)  # as if the folder were reachable: authentication must still refuse
    try:
        refused = _as_other_user(sock)
    finally:
        sock.chmod(0o700)
    assert refused.returncode != 0 and "in as" not in refused.stdout
    assert "authentication failed" in refused.stderr, refused.stderr
    assert "trust" not in _hba_words(deep_server)


def _hba_words(server: EmbeddedServer) -> list[str]:
    hba = (server.pgdata / "pg_hba.conf").read_text()
    return [word for line in hba.splitlines() if not line.startswith("#") for word in line.split()]


def test_no_parent_folder_mode_changes(tmp_path):
    private = reachable(tmp_path) / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    data = private / "inner" / "data"
    data.parent.mkdir()
    before = {p: stat.S_IMODE(p.stat().st_mode) for p in (private, data.parent)}
    server = EmbeddedServer(data)
    with pytest.raises(DatabaseUnavailable, match=f"{SYSTEM_USER}.*cannot reach.*{private}.*not searchable"):
        server.acquire()
    server.release()
    assert {p: stat.S_IMODE(p.stat().st_mode) for p in before} == before


def test_a_socket_folder_planted_by_another_user_is_refused(tmp_path):
    server = EmbeddedServer(_deep(tmp_path))
    planted = server.socket_dir()
    planted.mkdir(mode=0o777)
    nobody = pwd.getpwnam(OTHER_USER)
    os.chown(planted, nobody.pw_uid, nobody.pw_gid)
    try:
        with pytest.raises(DatabaseUnavailable, match="not a folder of the server's user"):
            server.acquire()
    finally:
        server.release()
        server.stop()
        planted.rmdir()


def test_an_old_trust_data_dir_is_secured_on_start(tmp_path):
    server = EmbeddedServer(reachable(tmp_path) / "data")
    server.acquire()
    server.release()
    (server.pgdata / "pg_hba.conf").write_text("local all all trust\n")
    try:
        server.acquire()
        assert "trust" not in _hba_words(server)
    finally:
        server.release()
        server.stop()


def test_tempfile_folders_are_private_by_default():
    # Why the tests open folders with tests.embedded_dirs.reachable: the product never does.
    folder = Path(tempfile.mkdtemp())
    try:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    finally:
        folder.rmdir()
