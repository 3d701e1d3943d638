"""A tiny walk-forward experiment end to end: lanes in their own databases, jobs, registry, results stored."""

from __future__ import annotations

import sqlalchemy as sa

from app.experiments import series, walkforward

TINY = walkforward.Options(every_min=30, horizon_s=1800, warmup_days=0.5, rounds=2, seeds=1,
                           cnn_arms=("profitable", "all"), rl_arms=("uniform",), epochs=1, batch_size=16,
                           rl_steps=5)


def test_tiny_experiment_stores_results_per_lane_and_round(engine, capsys):
    market = series.simulated("SIM-X", bars=int(2.5 * 1440), seed=3)
    exp_id = walkforward.run(engine, market, TINY)
    rows = walkforward.results(engine, exp_id)
    lanes = {(r["family"], r["arm"], r["seed"]) for r in rows}
    assert lanes == {("cnn", "profitable", 0), ("cnn", "all", 0), ("rl", "uniform", 0)}
    # Two scored windows per lane (the warm-up window only feeds the first model), baselines beside them.
    for lane in lanes:
        mine = [r for r in rows if (r["family"], r["arm"], r["seed"]) == lane]
        assert {r["round"] for r in mine} == {1, 2}
        assert {r["source"] for r in mine} >= {"no_trade", "always_long", "live"}
    no_trade = [r for r in rows if r["source"] == "no_trade"]
    assert all(r["calls"] == 0 and r["total_profit"] == 0 for r in no_trade)
    models = [r for r in rows if r["source"] == "model"]
    assert models and all(r["session_id"] is not None for r in models)
    assert all(r["leakage_rows"] == 0 for r in rows)
    with engine.connect() as conn:
        status, summary = conn.execute(sa.text("SELECT status, summary FROM experiments WHERE id = :i"),
                                       {"i": exp_id}).one()
        arms = conn.execute(sa.text("SELECT count(*) FROM v_experiment_arms WHERE experiment_id = :i"),
                            {"i": exp_id}).scalar_one()
        leftover = conn.execute(sa.text("SELECT count(*) FROM pg_database WHERE datname LIKE :p"),
                                {"p": f"%\\_x{exp_id}\\_%"}).scalar_one()
    assert status == "succeeded" and summary["comparisons"]
    assert arms >= 3 * 3
    assert leftover == 0  # lane databases are dropped
    assert "window 2" in capsys.readouterr().err  # progress while it runs
