"""The database URL's password never appears in output or logs, whatever goes wrong.

Every ``trainsrv`` command is run against URLs with a password that cannot work (a refused port,
a malformed port, a password with unescaped ``@`` and ``:``, a real server with an unknown
database or user) with debug logging on; stdout, stderr and every log record are searched for
the password and for its pieces.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from app import cli
from app.db.engine import redact
from app.paths import REPO_ROOT
from tests.security.support import error_line, leaves, required_args, run_cli

SECRET = "S3cr3tPa55w0rd"
# Pieces a half-working redaction would leave visible.
PIECES = (SECRET, "S3cr3t", "Pa55w0rd", "w0rd@")


def _urls(admin_url: str) -> dict[str, str]:
    real = make_url(admin_url)
    return {
        "refused": f"postgresql://ops:{SECRET}@127.0.0.1:9/trainsrv",
        "bad port": f"postgresql://ops:{SECRET}@127.0.0.1:notaport/trainsrv",
        "unescaped": "postgresql://ops:S3cr3t@Pa55:w0rd@127.0.0.1:9/trainsrv",
        "unknown database": real.set(password=SECRET, database="no_such_database").render_as_string(False),
        "unknown user": real.set(username="no_such_user", password=SECRET).render_as_string(False),
    }


def _commands() -> list[list[str]]:
    return [[*path, *required_args(parser)] for path, parser in leaves(cli.build_parser())]


def _assert_hidden(*texts: str) -> None:
    for text in texts:
        for piece in PIECES:
            assert piece not in text, f"{piece!r} leaked:\n{text}"


@pytest.mark.parametrize("kind", ["refused", "bad port", "unescaped", "unknown database", "unknown user"])
def test_no_command_prints_or_logs_the_password(kind, pg_admin_url, monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINSRV_DATABASE_URL", _urls(pg_admin_url)[kind])
    monkeypatch.setenv("TRAINSRV_DB_CONNECT_TIMEOUT_S", "2")
    monkeypatch.chdir(tmp_path)
    failed = 0
    for argv in _commands():
        code, out, err, logs = run_cli("-v", *argv)
        _assert_hidden(out, err, logs)
        if code != 0:
            failed += 1
            error_line(err)  # one line, no traceback
    assert failed >= len(_commands()) - 2  # all but the commands that need no database (jobs kinds, db url)


@pytest.mark.parametrize(
    "argv", [["-v", "serve", "--once"], ["db", "upgrade", "head"], ["train", "cnn", "--symbol", "X"]]
)
def test_a_real_process_with_a_bad_url_prints_one_line_without_the_password(argv):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSRV_")}
    env.update(TRAINSRV_DATABASE_URL="postgresql://ops:S3cr3t@Pa55:w0rd@127.0.0.1:9/trainsrv", LC_ALL="C.UTF-8")
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", *argv], capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120
    )
    _assert_hidden(result.stdout, result.stderr)
    assert result.returncode == 1
    assert "TRAINSRV_DATABASE_URL" in error_line(result.stderr)


# Passwords as users type them: any printable text, including '@', ':' and '%'.
PASSWORDS = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="/?#"), min_size=6, max_size=30
)


@settings(max_examples=300, deadline=None)
@given(password=PASSWORDS, user=st.sampled_from(["ops", "a", "trainer_1"]))
def test_redact_hides_any_password(password, user):
    url = f"postgresql://{user}:{password}@db.example:5432/trainsrv?sslmode=require"
    assert redact(url) == f"postgresql://{user}:***@db.example:5432/trainsrv?sslmode=require"
