"""A running trainer whose database leaves the migration head stops claiming, with one log line (issue 18)."""

from __future__ import annotations

from app.db import migrate
from app.db.engine import make_engine
from tests.jobs.conftest import scalar, wait_for


def test_a_downgrade_stops_a_running_trainer_with_one_line(jobs_engine, db_url, workers):
    trainer = workers()
    wait_for(lambda: any(e.get("event") == "worker.started" for e in trainer.events()), what="the trainer to start")
    owner = make_engine(db_url)
    try:
        migrate.downgrade(owner, "0010")
    finally:
        owner.dispose()
    assert trainer.wait(timeout=60) == 1, trainer.stderr()
    changed = [e for e in trainer.events() if e.get("event") == "worker.schema_changed"]
    assert len(changed) == 1, trainer.events()
    assert "0010" in changed[0]["error"] and "stopped claiming jobs" in changed[0]["error"]
    # Nothing was claimed against the old schema.
    assert scalar(jobs_engine, "SELECT count(*) FROM jobs WHERE attempts > 0") == 0
