"""A tiny walk-forward experiment end to end: lanes in their own databases, jobs, registry, results stored."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from app.db import queries
from app.db.engine import make_engine
from app.experiments import lanes, report, series, walkforward

TINY = walkforward.Options(
    every_min=30,
    horizon_s=1800,
    warmup_days=0.5,
    rounds=2,
    seeds=1,
    cnn_arms=("profitable", "all"),
    rl_arms=("uniform",),
    epochs=1,
    batch_size=16,
    rl_steps=5,
)


def test_tiny_experiment_stores_results_per_lane_and_round(engine, capsys, tmp_path):
    market = series.simulated("SIM-X", bars=int(2.5 * 1440), seed=3)
    exp_id = walkforward.run(engine, market, dataclasses.replace(TINY, keep_lanes=True))
    try:
        _check_lineage_audit(engine, exp_id)
    finally:
        for lane in ("cnn_profitable_0", "cnn_all_0", "rl_uniform_0"):
            lanes.drop(engine, lanes.database_name(engine, exp_id, lane))
    rows = walkforward.results(engine, exp_id)
    lane_keys = {(r["family"], r["arm"], r["seed"]) for r in rows}
    assert lane_keys == {("cnn", "profitable", 0), ("cnn", "all", 0), ("rl", "uniform", 0)}
    # Two scored windows per lane (the warm-up window only feeds the first model), baselines beside them.
    for lane in lane_keys:
        mine = [r for r in rows if (r["family"], r["arm"], r["seed"]) == lane]
        assert {r["round"] for r in mine} == {1, 2}
        assert {r["source"] for r in mine} >= {"no_trade", "always_long", "live"}
    no_trade = [r for r in rows if r["source"] == "no_trade"]
    assert all(r["calls"] == 0 and r["total_profit"] == 0 for r in no_trade)
    models = [r for r in rows if r["source"] == "model"]
    assert models and all(r["session_id"] is not None for r in models)
    assert all(r["leakage_rows"] == 0 for r in rows)
    with engine.connect() as conn:
        status, summary = conn.execute(
            sa.text("SELECT status, summary FROM experiments WHERE id = :i"), {"i": exp_id}
        ).one()
        arms = conn.execute(
            sa.text("SELECT count(*) FROM v_experiment_arms WHERE experiment_id = :i"), {"i": exp_id}
        ).scalar_one()
        leftover = conn.execute(
            sa.text("SELECT count(*) FROM pg_database WHERE datname LIKE :p"), {"p": f"%\\_x{exp_id}\\_%"}
        ).scalar_one()
    assert status == "succeeded" and summary["comparisons"]
    assert arms >= 3 * 3
    assert leftover == 0
    assert "window 2" in capsys.readouterr().err  # progress while it runs
    with engine.connect() as conn:
        experiment = dict(conn.execute(queries.get("experiments.get"), {"id": exp_id}).mappings().one())
    paths = report.write(experiment, rows, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "| profitable | model |" in text and "Paired bootstrap" in text and "Leakage audit: 0 rows" in text
    assert all(p.stat().st_size > 0 for p in paths)


def _check_lineage_audit(engine, exp_id: int) -> None:
    """A lane's audit is empty; a session said to have trained past its evaluation slice is reported, and so
    is every later session warm-started from it."""
    lane = make_engine(lanes.url_of(engine, lanes.database_name(engine, exp_id, "cnn_all_0")))
    try:
        with lane.begin() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM v_leakage_audit")).scalar_one() == 0
            first = conn.execute(sa.text("SELECT min(id) FROM training_sessions WHERE status = 'succeeded'")).scalar()
            conn.execute(
                sa.text(
                    "UPDATE training_sessions SET trained_through = "
                    "CAST(config ->> 'eval_cutoff' AS timestamptz) + interval '1 hour' WHERE id = :i"
                ),
                {"i": first},
            )
            heirs = (
                conn.execute(
                    sa.text(
                        "WITH RECURSIVE h AS (SELECT id FROM training_sessions WHERE id = :i UNION ALL "
                        "SELECT s.id FROM training_sessions s JOIN h ON s.init_session_id = h.id) SELECT id FROM h"
                    ),
                    {"i": first},
                )
                .scalars()
                .all()
            )
            found = (
                conn.execute(
                    sa.text(
                        "SELECT session_id FROM v_leakage_audit "
                        "WHERE check_name = 'training_after_evaluation' AND item_id = :i"
                    ),
                    {"i": first},
                )
                .scalars()
                .all()
            )
        assert sorted(found) == sorted(heirs)
    finally:
        lane.dispose()
