"""RL experiences from consecutive validated predictions: transitions, episode ends, priorities."""

import datetime as dt

import pytest
import sqlalchemy as sa

from app.config import Settings
from app.experiences.build import build_experiences
from app.outcomes.validate import validate_outcomes

from .support import UTC, insert_candles, outcome, read_candles, record

LATER = dt.datetime(2030, 1, 1, tzinfo=UTC)
SETTINGS = Settings(experience_max_gap_s=900)


def at(hh_mm: str) -> dt.datetime:
    return dt.datetime.fromisoformat(f"2022-01-01 {hh_mm}").replace(tzinfo=UTC)


@pytest.fixture
def trajectory(engine, real_candles_path):
    """An RL model's calls at 05:00, 05:05, 05:10 and, after a pause, 06:30; a CNN call in between."""
    insert_candles(engine, read_candles(real_candles_path, 0, 500))
    ids = [
        record(engine, at(t), 300, a, model_kind="rl")
        for t, a in (("05:00", "long"), ("05:05", "short"), ("05:10", "hold"), ("06:30", "long"))
    ]
    record(engine, at("05:02"), 300, "long", model_kind="cnn")
    validate_outcomes(engine, SETTINGS, as_of=LATER)
    return engine, ids


def _experiences(conn) -> dict[int, dict]:
    rows = conn.execute(
        sa.text("SELECT e.*, p.package_id FROM experiences e JOIN predictions p ON p.id = e.prediction_id")
    ).mappings()
    return {r["prediction_id"]: dict(r) for r in rows}


def test_transitions_follow_the_models_predictions(trajectory):
    engine, ids = trajectory
    assert build_experiences(engine, SETTINGS, as_of=LATER) == {"inserted": 4, "updated": 0}
    with engine.connect() as conn:
        exp = _experiences(conn)
        outcomes = {i: outcome(conn, i) for i in ids}
    assert set(exp) == set(ids)  # the CNN's call is not an RL step
    first, second, third, last = (exp[i] for i in ids)
    assert first["next_state_package_id"] == second["package_id"] and first["done"] is False
    assert second["next_state_package_id"] == third["package_id"] and second["done"] is False
    assert third["done"] is True and third["next_state_package_id"] is None  # 80 min pause > 15 min
    assert last["done"] is True and last["next_state_package_id"] is None
    for i in ids:
        e, o = exp[i], outcomes[i]
        assert e["state_package_id"] == e["package_id"]
        assert e["reward"] == o["actual_profit"]
        assert (e["optimal_action"], e["is_profitable"]) == (o["optimal_action"], o["is_profitable"])
        assert e["priority"] == 1.0  # the empty replay's maximum
    assert [exp[i]["action"] for i in ids] == ["long", "short", "hold", "long"]


def test_the_newest_step_waits_for_its_successor(trajectory):
    engine, ids = trajectory
    counts = build_experiences(engine, SETTINGS, as_of=at("06:40"))
    assert counts["inserted"] == 3
    with engine.connect() as conn:
        assert ids[-1] not in _experiences(conn)


def test_rebuild_is_idempotent_and_follows_relabelled_outcomes(trajectory):
    engine, ids = trajectory
    build_experiences(engine, SETTINGS, as_of=LATER)
    assert build_experiences(engine, SETTINGS, as_of=LATER) == {"inserted": 0, "updated": 0}
    free = Settings(fee_rate=0.0, slippage_rate=0.0)
    validate_outcomes(engine, free, as_of=LATER, recheck=True)
    counts = build_experiences(engine, SETTINGS, as_of=LATER)
    assert counts["inserted"] == 0 and counts["updated"] >= 3  # the long / short rewards lost their costs
    with engine.connect() as conn:
        exp = _experiences(conn)
        assert all(exp[i]["reward"] == outcome(conn, i)["actual_profit"] for i in ids)


def test_new_experiences_enter_at_the_current_maximum_priority(trajectory):
    engine, ids = trajectory
    build_experiences(engine, SETTINGS, as_of=LATER)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE experiences SET priority = 7.5 WHERE prediction_id = :id"), {"id": ids[0]})
    late = record(engine, at("06:35"), 300, "short", model_kind="rl")
    validate_outcomes(engine, SETTINGS, as_of=LATER)
    counts = build_experiences(engine, SETTINGS, as_of=LATER)
    assert counts == {"inserted": 1, "updated": 1}  # 06:30 now continues to 06:35
    with engine.connect() as conn:
        exp = _experiences(conn)
    assert exp[late]["priority"] == 7.5
    assert exp[ids[3]]["next_state_package_id"] == exp[late]["package_id"] and exp[ids[3]]["priority"] == 1.0


def test_the_job_handler_builds_and_checks_its_parameters(trajectory):
    from app.errors import ValidationError
    from app.jobs import registry

    engine, _ = trajectory
    handler = registry.get("build_experiences")
    with pytest.raises(ValidationError, match="model_kind"):
        handler.validate({"model_kind": "gbm"})
    result = handler.fn(registry.JobContext(engine=engine, settings=SETTINGS), handler.validate({"symbol": "BTC-PERP"}))
    assert result == {"inserted": 4, "updated": 0}
