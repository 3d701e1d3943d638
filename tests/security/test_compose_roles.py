"""docker-compose's role set-up (deploy/initdb/10-trainsrv-roles.sh) on a real server: migrations run as
trainsrv_owner, the trainer as trainsrv_worker, analysts as trainsrv_reader; none is a superuser."""

import subprocess
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app.db.embedded import bin_dir
from app.db.engine import make_engine
from app.paths import REPO_ROOT
from tests.conftest import _admin_execute
from tests.e2e import cli

SCRIPT = REPO_ROOT / "deploy" / "initdb" / "10-trainsrv-roles.sh"
PASSWORDS = {"owner": "own-pw", "worker": "work-pw", "reader": "read-pw"}


@pytest.fixture
def compose_db(pg_admin_url):
    admin = make_url(pg_admin_url)
    if admin.query.get("host") is None or not str(admin.query["host"]).startswith("/"):
        pytest.skip("needs the embedded server (runs the script with its psql over the socket)")
    name = f"trainsrv_c_{uuid.uuid4().hex[:10]}"
    _admin_execute(pg_admin_url, f'CREATE DATABASE "{name}"')
    env = {
        "PATH": f"{bin_dir()}:/usr/bin:/bin",
        "PGHOST": str(admin.query["host"]),
        "PGPORT": str(admin.query.get("port", 5432)),
        "POSTGRES_USER": admin.username,
        "POSTGRES_DB": name,
        **{f"TRAINSRV_{k.upper()}_PASSWORD": v for k, v in PASSWORDS.items()},
    }
    for _ in range(2):  # a second run changes nothing and does not fail
        result = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    urls = {
        who: admin.set(username=f"trainsrv_{who}", password=pw, database=name).render_as_string(hide_password=False)
        for who, pw in PASSWORDS.items()
    }
    yield urls
    _admin_execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _scalar(url, sql):
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()
    finally:
        engine.dispose()


def test_each_service_works_with_its_own_login(compose_db):
    cli.run("db", "upgrade", env={"TRAINSRV_DATABASE_URL": compose_db["owner"]}, check=True)
    worker = {"TRAINSRV_DATABASE_URL": compose_db["worker"], "TRAINSRV_ENABLE_BACKGROUND_VALIDATION": "false"}
    cli.run("jobs", "enqueue", "noop", env=worker, check=True)
    cli.run("serve", "--once", "--no-schedule", env=worker, check=True)
    assert _scalar(compose_db["worker"], "SELECT count(*) FROM jobs WHERE state = 'succeeded'") == 1
    check = cli.run("db", "check", env=worker)
    assert check.returncode == 0, check.stdout + check.stderr
    assert _scalar(compose_db["reader"], "SELECT count(*) FROM v_profitable_setups") == 0
    for who in PASSWORDS:
        assert _scalar(compose_db[who], "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") is False


@pytest.mark.parametrize(
    "who,sql",
    [
        ("worker", "CREATE TABLE stray (x int)"),
        ("reader", "SELECT * FROM predictions"),
        ("reader", "SELECT * FROM candles"),
    ],
)
def test_least_privilege_refusals(compose_db, who, sql):
    cli.run("db", "upgrade", env={"TRAINSRV_DATABASE_URL": compose_db["owner"]}, check=True)
    with pytest.raises(sa.exc.ProgrammingError) as err:
        _scalar(compose_db[who], sql)
    assert err.value.orig.sqlstate == "42501"
