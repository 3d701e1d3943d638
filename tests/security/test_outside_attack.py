"""The attacks of issue 18, replayed with real LOGIN roles (not SET ROLE): each one is refused now.

Items: 3 (the orchestrator chooses its own rules), 4 (any login takes the trainer's locks), 7 (malformed
times reinterpreted), 8 (raw errors and unbounded text), 10 (views leak to a reader's function; an
error shows another package's time; internal views granted to analysts).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid

import numpy as np
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app.client import Client, Prediction
from app.db import locks, views
from app.errors import ValidationError
from app.ingest import ModelInputPackage, package_from_candles
from tests.ingest.conftest import SYMBOL, T0, candle_engine  # noqa: F401 - the module's candle database
from tests.security.support import error_line, run_cli

ROLES = {
    "orchestrator": "trainsrv_orchestrator",
    "analyst": "trainsrv_analyst",
    "trainer": "trainsrv_trainer",
    "stranger": None,
}


def _admin(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture(scope="module")
def logins(candle_engine):  # noqa: F811
    """One LOGIN role per group (and a stranger with none), as ops create them; their connection URLs."""
    owner_url = candle_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    suffix = uuid.uuid4().hex[:8]
    names = {kind: f"it18_{kind}_{suffix}" for kind in ROLES}
    for kind, name in names.items():
        _admin(owner_url, f"CREATE ROLE {name} LOGIN")
        if ROLES[kind]:
            _admin(owner_url, f"GRANT {ROLES[kind]} TO {name}")
    yield {
        kind: make_url(owner_url).set(username=name).render_as_string(hide_password=False)
        for kind, name in names.items()
    }
    for name in names.values():
        _admin(owner_url, f"DROP OWNED BY {name}", f"DROP ROLE {name}")


def _connect(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    assert conn.execute("SELECT session_user = current_user AND current_setting('role') = 'none'").fetchone()[0]
    return conn


def _sqlstate(url: str, statement: str, params=()) -> str | None:
    with _connect(url) as conn:
        try:
            conn.execute(statement, params)
        except psycopg.Error as exc:
            return exc.sqlstate
    return None


@pytest.fixture(scope="module")
def doc(candle_engine):  # noqa: F811
    with candle_engine.connect() as conn:
        return package_from_candles(conn, SYMBOL, T0).to_document()


def _variant(doc: dict, **changes) -> str:
    """The package document with ``changes`` (a distinct metadata marker keeps each one a new package)."""
    return json.dumps({**doc, "metadata": {"case": uuid.uuid4().hex}, **changes})


# -- item 3: rules come from the server's configuration ---------------------------------------------


@pytest.mark.parametrize(
    "rules",
    [
        '{"max_clock_skew_s": null}',
        "[]",
        '{"max_payload_bytes": 1e12}',
        '{"min_data_completeness": 0}',
        '{"required_fields": []}',
    ],
)
def test_the_orchestrator_cannot_choose_its_rules(logins, doc, rules):
    for fn in ("ingest_package(%s::jsonb, %s::jsonb)", "ingest_packages(ARRAY[%s::jsonb], %s::jsonb)"):
        assert _sqlstate(logins["orchestrator"], f"SELECT * FROM {fn}", (_variant(doc), rules)) == "42501"
    assert (
        _sqlstate(
            logins["orchestrator"],
            "SELECT * FROM ingest_record(%s::jsonb, %s::jsonb, %s::jsonb)",
            (
                _variant(doc),
                json.dumps(
                    {"model_kind": "cnn", "model_version": "v", "action": "long", "confidence": 0.5, "horizon_s": 60}
                ),
                rules,
            ),
        )
        == "42501"
    )


def test_the_servers_rules_apply_to_the_orchestrator(logins, doc):
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    with _connect(logins["orchestrator"]) as conn:
        valid, flags = conn.execute(
            "SELECT is_valid, validation_flags FROM ingest_package(%s::jsonb, '{}')", (_variant(doc, ts=future),)
        ).fetchone()
    assert not valid and flags["timestamp_not_future"] is False


def test_bad_rules_are_a_clear_error(candle_engine, logins, doc):  # noqa: F811
    with pytest.raises(sa.exc.DBAPIError, match=r"rules\.max_clock_skew_s: must be a number"):
        with candle_engine.begin() as conn:
            conn.execute(sa.text("""UPDATE ingest_config SET rules = '{"max_clock_skew_s": "5s"}'"""))
    with pytest.raises(sa.exc.DBAPIError, match=r"rules\.required_fields: must be an array"):
        with candle_engine.begin() as conn:
            conn.execute(sa.text("""UPDATE ingest_config SET rules = '{"required_fields": "ohlcv.1m"}'"""))
    # The trainer may still pass rules (tests, maintenance), but only sound ones.
    with _connect(logins["trainer"]) as conn:
        with pytest.raises(psycopg.Error, match=r"rules\.min_data_completeness: must be a number in \[0, 1\]") as err:
            conn.execute(
                "SELECT * FROM ingest_package(%s::jsonb, %s::jsonb)",
                (_variant(doc), '{"min_data_completeness": "high"}'),
            )
        assert err.value.sqlstate == "22023"
        assert (
            conn.execute(
                "SELECT is_valid FROM ingest_package(%s::jsonb, %s::jsonb)",
                (_variant(doc), '{"min_data_completeness": 0.5}'),
            ).fetchone()[0]
            is True
        )


def test_server_configuration_changes_the_verdict(candle_engine, logins, doc):  # noqa: F811
    try:
        with candle_engine.begin() as conn:
            conn.execute(sa.text("""UPDATE ingest_config SET rules = '{"required_fields": ["features.nope"]}'"""))
        with _connect(logins["orchestrator"]) as conn:
            valid, completeness = conn.execute(
                "SELECT is_valid, completeness_score FROM ingest_package(%s::jsonb)", (_variant(doc),)
            ).fetchone()
        assert (valid, completeness) == (False, 0.0)
    finally:
        with candle_engine.begin() as conn:
            conn.execute(sa.text("UPDATE ingest_config SET rules = '{}'"))


def test_a_missing_flag_is_a_failed_flag(candle_engine):  # noqa: F811
    with candle_engine.connect() as conn:
        flags = conn.execute(
            sa.text("""SELECT ingest_complete_flags('{"timestamp_sane": true, "arrays_finite": null}')""")
        ).scalar_one()
    assert flags["timestamp_sane"] is True and flags["arrays_finite"] is False and len(flags) == 10
    assert sum(flags.values()) == 1


# -- item 4: the trainer's locks ------------------------------------------------------------------


@pytest.mark.parametrize("who", ["analyst", "orchestrator", "stranger"])
@pytest.mark.parametrize(
    "lock",
    [
        "SELECT pg_advisory_lock(hashtext('trainsrv.outcomes.label'))",
        "SELECT pg_try_advisory_lock(29779, 1)",
        "SELECT pg_advisory_xact_lock(hashtext('trainsrv.migrations'))",
        "SELECT pg_try_advisory_lock_shared(hashtext('trainsrv.events.detect'))",
    ],
)
def test_other_roles_cannot_take_the_trainers_locks(logins, who, lock):
    assert _sqlstate(logins[who], lock) == "42501"


def test_the_trainer_takes_its_locks(logins):
    with _connect(logins["trainer"]) as conn:
        assert conn.execute("SELECT pg_try_advisory_lock(29779, 1)").fetchone()[0] is True


def test_trainer_waits_for_a_lock_are_bounded(candle_engine, monkeypatch):  # noqa: F811
    from app.outcomes.validate import validate_outcomes

    monkeypatch.setattr(locks, "LOCK_WAIT_S", 0.5)
    holder = candle_engine.connect()
    holder.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('trainsrv.outcomes.label'))"))
    result: list = []

    def run():
        try:
            validate_outcomes(candle_engine)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            result.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    worker.join(timeout=15)
    waited = time.monotonic() - started
    holder.rollback()
    holder.close()
    worker.join(timeout=30)
    assert waited < 15, "validation waited for the lock without a bound"
    assert len(result) == 1 and isinstance(result[0], locks.LockBusy) and "outcome labelling" in str(result[0])


# -- item 7: strict ISO 8601 times ------------------------------------------------------------------


@pytest.mark.parametrize(
    "ts",
    [
        "1-01-01T00:00:00Z",
        "5-06-01T00:00:00Z",
        "22-01-10T12:00:00Z",
        "20220110T120000Z",
        "2022-01-10T12:00:00",
        "now",
        "J2459590",
        "2022-01-10T12:00:00Z junk",
    ],
)
def test_malformed_times_are_refused_not_reinterpreted(logins, doc, ts):
    with _connect(logins["orchestrator"]) as conn:
        with pytest.raises(psycopg.Error, match="ts: must be an ISO 8601 time with a four-digit year") as err:
            conn.execute("SELECT * FROM ingest_package(%s::jsonb)", (_variant(doc, ts=ts),))
        assert err.value.sqlstate == "22023"
        package_id = conn.execute("SELECT package_id FROM ingest_package(%s::jsonb)", (_variant(doc),)).fetchone()[0]
        with pytest.raises(psycopg.Error, match="predicted_at: must be an ISO 8601 time"):
            conn.execute(
                "SELECT * FROM ingest_prediction(%s::jsonb)",
                (
                    json.dumps(
                        {
                            "package_id": package_id,
                            "model_kind": "cnn",
                            "model_version": "v",
                            "action": "long",
                            "confidence": 0.5,
                            "horizon_s": 60,
                            "predicted_at": ts,
                        }
                    ),
                ),
            )


def test_the_client_writes_four_digit_years(candle_engine, doc):  # noqa: F811
    package = ModelInputPackage.from_document({**doc, "ts": "2022-01-10T12:00:00.000000Z"})
    package.ts = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
    assert package.to_document()["ts"] == "0001-01-01T00:00:00.000000Z"
    with Client(candle_engine) as client:
        result = client.insert_package(package)
        assert result.data_hash == package.data_hash and not result.is_valid
        assert client.load_package(result.package_id).ts.year == 1
    with candle_engine.connect() as conn:
        assert (
            conn.execute(
                sa.text("SELECT extract(year FROM ts) FROM input_packages WHERE id = :i"), {"i": result.package_id}
            ).scalar_one()
            == 1
        )


# -- items 1 and 8: bounded input at the boundary ------------------------------------------------------


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"metadata": _nested(400)}, "metadata: must not nest deeper than 32 levels"),
        ({"metadata": {"blob": "x" * 70_000}}, "metadata: must be at most 65536 bytes"),
        ({"windows": {"1m": 60.0}}, "windows.1m: must be a positive integer"),
        ({"ohlcv": {"3000000w": {"t": [0], "bars": [[1, 1, 1, 1, 1]]}}}, "ohlcv.3000000w: not a timeframe"),
    ],
)
def test_unbounded_package_parts_are_refused(logins, doc, changes, field):
    with _connect(logins["orchestrator"]) as conn:
        with pytest.raises(psycopg.Error, match=field.replace(".", r"\.")) as err:
            conn.execute("SELECT * FROM ingest_package(%s::jsonb)", (json.dumps({**doc, "metadata": {}, **changes}),))
        assert err.value.sqlstate == "22023"


@pytest.mark.parametrize("field", ["prediction_key", "model_version"])
def test_unbounded_prediction_texts_are_refused(logins, doc, field):
    with _connect(logins["orchestrator"]) as conn:
        package_id = conn.execute("SELECT package_id FROM ingest_package(%s::jsonb)", (_variant(doc),)).fetchone()[0]
        prediction = {
            "package_id": package_id,
            "model_kind": "cnn",
            "model_version": "v",
            "action": "long",
            "confidence": 0.5,
            "horizon_s": 60,
            field: "k" * 5000,
        }
        with pytest.raises(psycopg.Error, match=f"{field}: must be at most 200 characters") as err:
            conn.execute("SELECT * FROM ingest_prediction(%s::jsonb)", (json.dumps(prediction),))
        assert err.value.sqlstate == "22023"


def test_deep_metadata_is_refused_by_the_python_package():
    with pytest.raises(ValidationError, match="metadata: must not nest deeper than 32 levels"):
        ModelInputPackage(
            "BTC-PERP",
            dt.datetime(2022, 1, 1, tzinfo=dt.UTC),
            {"1m": np.ones((3, 5))},
            {"1m": np.arange(3) * 60},
            metadata=_nested(600),
        )
    with pytest.raises(ValidationError, match="windows.1m: must be an integer"):
        ModelInputPackage(
            "BTC-PERP",
            dt.datetime(2022, 1, 1, tzinfo=dt.UTC),
            {"1m": np.ones((3, 5))},
            {"1m": np.arange(3) * 60},
            windows={"1m": 60.0},
        )


def test_a_long_prediction_key_from_the_client_is_a_validation_error(candle_engine, doc):  # noqa: F811
    with Client(candle_engine) as client:
        package_id = client.insert_package(ModelInputPackage.from_document(doc)).package_id
        with pytest.raises(ValidationError, match="prediction_key"):
            client.insert_prediction(Prediction("cnn", "v", "long", 0.5, 60, prediction_key="k" * 5000), package_id)


def test_cli_refuses_unbounded_values_in_one_line(candle_engine, tmp_path, monkeypatch):  # noqa: F811
    url = candle_engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv("TRAINSRV_DATABASE_URL", url)
    csv = tmp_path / "c.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n2022-01-01T00:00:00Z,1,1,1,1,1\n")
    bad_header = tmp_path / "h.csv"
    bad_header.write_bytes(b"\x1b[2J" + b"A" * 2_000_000 + b"\x07\n1,2\n")
    blocked = tmp_path / "file"
    blocked.write_text("")
    with candle_engine.begin() as conn:
        session = conn.execute(
            sa.text(
                "INSERT INTO training_sessions (model_kind, model_name, seed, torch_version, trainsrv_version, device, "
                "capture_policy, replay_exact) VALUES ('cnn', 'm', 1, 't', 'v', 'cpu', 'full', true) RETURNING id"
            )
        ).scalar()
        conn.execute(
            sa.text(
                "INSERT INTO training_steps (session_id, step, loss_total, learning_rate, batch_ids) "
                "VALUES (:s, 1, 1.0, 0.001, '{}')"
            ),
            {"s": session},
        )
        before = conn.execute(sa.text("SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM candles)")).one()
    cases = [
        (("ingest", "candles", str(csv), "--symbol", "X", "--timeframe", "3000000w"), "timeframe"),
        (("jobs", "enqueue", "noop", "--delay", "1e308"), "delay"),
        (("jobs", "enqueue", "train_cnn", "--param", "symbol=BTC-PERP", "--param", "epochs=99999999999"), "epochs"),
        (
            ("jobs", "enqueue", "train_cnn", "--param", "symbol=BTC-PERP", "--param", "model_config={bad"),
            "model_config",
        ),
        (("train", "cnn", "--symbol", "BTC-PERP", "--enqueue", "--model-config", "[1]"), "model_config"),
        (("report", str(session), "--out", str(blocked / "sub")), "--out"),
        (("ingest", "candles", str(bad_header), "--symbol", "X", "--timeframe", "1m"), "header"),
    ]
    for argv, field in cases:
        code, out, err, _ = run_cli(*argv)
        line = error_line(err)
        assert code != 0 and field in line, (argv, err)
        assert len(line) < 400 and "\x1b" not in line and "\x07" not in line, (argv, line[:500])
    with candle_engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM candles)")).one() == before
        )


# -- item 10: views, errors, grants -----------------------------------------------------------------


def test_every_view_is_a_security_barrier(candle_engine):  # noqa: F811
    with candle_engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.relname, coalesce('security_barrier=true' = ANY (c.reloptions), false) FROM pg_class c "
                "WHERE c.relkind = 'v' AND c.relnamespace = current_schema()::regnamespace"
            )
        ).all()
    assert rows and all(barrier for _, barrier in rows), [name for name, barrier in rows if not barrier]


def test_a_readers_function_sees_only_the_rows_a_view_lets_through(candle_engine, logins):  # noqa: F811
    from tests.rl_replay.support import experience, package

    with candle_engine.begin() as conn:
        hidden = experience(conn, 1.0, state=package(conn, valid=False))  # v_rl_replay leaves it out
        shown = experience(conn, 1.0)
    with _connect(logins["analyst"]) as conn:
        seen: list[str] = []
        conn.add_notice_handler(lambda notice: seen.append(notice.message_primary))
        conn.execute(
            "CREATE FUNCTION pg_temp.peek(bigint) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS "
            "$$ BEGIN RAISE NOTICE 'saw %', $1; RETURN true; END $$"
        )
        ids = [r[0] for r in conn.execute("SELECT id FROM v_rl_replay WHERE pg_temp.peek(id)")]
    assert shown in ids and hidden not in ids
    assert f"saw {hidden}" not in seen, "the reader's function saw a row the view filters out"


def test_internal_views_are_not_granted_to_analysts(logins):
    for name in sorted(views.INTERNAL_VIEWS):
        assert _sqlstate(logins["analyst"], f"SELECT * FROM {name} LIMIT 1") == "42501", name
    assert _sqlstate(logins["analyst"], "SELECT * FROM v_rl_replay LIMIT 1") is None


def test_a_prediction_error_does_not_reveal_another_packages_time(logins, doc):
    with _connect(logins["orchestrator"]) as conn:
        package_id = conn.execute("SELECT package_id FROM ingest_package(%s::jsonb)", (_variant(doc),)).fetchone()[0]
        with pytest.raises(psycopg.Error) as err:
            conn.execute(
                "SELECT * FROM ingest_prediction(%s::jsonb)",
                (
                    json.dumps(
                        {
                            "package_id": package_id,
                            "model_kind": "cnn",
                            "model_version": "v",
                            "action": "long",
                            "confidence": 0.5,
                            "horizon_s": 60,
                            "predicted_at": "2000-01-01T00:00:00Z",
                        }
                    ),
                ),
            )
    message = str(err.value)
    assert "predicted_at: is before its package's ts" in message and "2022" not in message
