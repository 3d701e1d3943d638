"""Each role is refused outside its room (checked with SET ROLE on the real schema)."""

import datetime as dt

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, ProgrammingError

from app.client import Client

VIEWS = [
    "v_profitable_setups",
    "v_setup_candles",
    "v_cnn_replay",
    "v_rl_replay",
    "v_rl_replay_stats",
    "v_session_value",
    "v_system_stats",
]
TABLES = [
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


def _as(engine, role, sql, params=None):
    with engine.connect() as conn:
        conn.execute(sa.text(f"SET ROLE {role}"))  # fixed role names from this module
        result = conn.execute(sa.text(sql), params or {})
        rows = result.all() if result.returns_rows else None
        conn.rollback()
        return rows


def _refused(engine, role, sql, params=None):
    with pytest.raises((ProgrammingError, DBAPIError)) as err:
        _as(engine, role, sql, params)
    assert err.value.orig.sqlstate == "42501", err.value.orig  # insufficient_privilege


@pytest.fixture
def package_doc(engine, real_candles_path):
    from app.ingest.builder import package_from_candles
    from app.ingest.candles import ingest_candles

    ingest_candles(engine, real_candles_path, "BTC-PERP", "1m")
    with engine.connect() as conn:
        pkg = package_from_candles(conn, "BTC-PERP", dt.datetime(2022, 1, 3, 12, tzinfo=dt.UTC))
    return pkg


@pytest.mark.parametrize("table", TABLES)
def test_orchestrator_reads_nothing(engine, table):
    _refused(engine, "trainsrv_orchestrator", f"SELECT 1 FROM {table} LIMIT 1")


@pytest.mark.parametrize("table", ["input_packages", "predictions", "candles"])
def test_orchestrator_cannot_bypass_validation(engine, table):
    _refused(engine, "trainsrv_orchestrator", f"DELETE FROM {table}")


def test_orchestrator_records_through_the_functions(engine, package_doc):
    doc = package_doc.to_json()
    rows = _as(
        engine, "trainsrv_orchestrator", "SELECT * FROM ingest_package(CAST(:p AS jsonb), '{}'::jsonb)", {"p": doc}
    )
    assert rows and rows[0][0] is not None
    _refused(engine, "trainsrv_orchestrator", "SELECT * FROM v_profitable_setups")


@pytest.mark.parametrize("view", VIEWS)
def test_analyst_reads_documented_views(engine, view):
    _as(engine, "trainsrv_analyst", f"SELECT * FROM {view} LIMIT 1")


@pytest.mark.parametrize("table", TABLES)
def test_analyst_cannot_read_or_write_tables(engine, table):
    _refused(engine, "trainsrv_analyst", f"SELECT 1 FROM {table} LIMIT 1")


def test_analyst_cannot_ingest(engine, package_doc):
    _refused(
        engine,
        "trainsrv_analyst",
        "SELECT * FROM ingest_package(CAST(:p AS jsonb), '{}'::jsonb)",
        {"p": package_doc.to_json()},
    )


def test_trainer_reads_and_writes_but_no_ddl(engine):
    _as(engine, "trainsrv_trainer", "INSERT INTO jobs (kind) VALUES ('noop')")
    _as(engine, "trainsrv_trainer", "SELECT count(*) FROM gradient_blobs")
    _refused(engine, "trainsrv_trainer", "DROP TABLE jobs")
    _refused(engine, "trainsrv_trainer", "CREATE TABLE stray (x int)")


def test_client_works_for_the_owner(engine, package_doc):
    # The same SECURITY DEFINER functions serve the owner-run Python client.
    result = Client(engine).insert_package(package_doc)
    assert result is not None
