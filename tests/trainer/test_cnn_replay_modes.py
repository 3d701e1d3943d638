"""The CNN's replay modes: the profit threshold decides the set (max_episodes no longer hides it), hold
examples are kept, and priority sampling draws batches in proportion to v_cnn_replay's priority."""

from __future__ import annotations

from collections import Counter

import pytest
import sqlalchemy as sa

from app.db.engine import make_engine
from app.demo import candle_episodes as support
from app.trainer import cnn_train, episodes

BASE = dict(
    symbol=support.SYMBOL,
    epochs=2,
    batch_size=16,
    model_config=support.SMALL_MODEL,
    seed=3,
    device="cpu",
    capture=cnn_train.CapturePolicy("none"),
    init="scratch",
)


@pytest.fixture(scope="module")
def engine(module_db_url, real_candles_path):
    eng = make_engine(module_db_url)
    assert support.build_episodes(eng, real_candles_path, minutes=900) > 200
    yield eng
    eng.dispose()


def _split(engine, **kw):
    with engine.connect() as conn:
        return episodes.split(conn, support.SYMBOL, eval_fraction=0.2, **{"max_episodes": None, **kw})


def test_the_profit_threshold_decides_the_set_when_every_candidate_is_taken(engine):
    everything = _split(engine, min_profitability=0.0)
    profitable = _split(engine, min_profitability=0.0, min_profit_r=0.0)
    assert len(profitable.train) < len(everything.train)
    assert all(e.is_profitable for e in profitable.train)
    seed_rule = _split(engine, min_profitability=0.7)
    assert {e.episode_id for e in seed_rule.train} < {e.episode_id for e in everything.train}


def test_a_profit_filter_keeps_the_hold_examples_only_when_asked(engine):
    without = _split(engine, min_profitability=0.0, min_profit_r=0.0)
    with_holds = _split(engine, min_profitability=0.0, min_profit_r=0.0, keep_holds=True)
    assert "hold" not in {e.optimal_action for e in without.train}
    holds = [e for e in with_holds.train if e.optimal_action == "hold"]
    assert holds and len(with_holds.train) == len(without.train) + len(holds)


def test_priority_sampling_draws_in_proportion_to_priority_and_is_reproducible(engine):
    opts = cnn_train.CnnTrainOptions(**BASE, min_profitability=0.0, sampling="priority")
    first = cnn_train.train_cnn(engine, opts)
    again = cnn_train.train_cnn(engine, opts)
    with engine.connect() as conn:
        rows = {
            sid: conn.execute(sa.text("SELECT config FROM training_sessions WHERE id = :i"), {"i": sid}).scalar_one()
            for sid in (first["session_id"], again["session_id"])
        }
        batches = {
            sid: [
                i
                for (b,) in conn.execute(
                    sa.text("SELECT batch_ids FROM training_steps WHERE session_id = :i ORDER BY step"), {"i": sid}
                )
                for i in b
            ]
            for sid in rows
        }
    config = rows[first["session_id"]]
    assert config["sampling"] == "priority" and len(config["sample_weights"]) == len(config["train_episode_ids"])
    # The weights are stored with the session (a resume draws the same batches); high-priority episodes are drawn more.
    counts = Counter(batches[first["session_id"]])
    weight = dict(zip(config["train_episode_ids"], config["sample_weights"]))
    top = sorted(weight, key=weight.get)[-len(weight) // 4 :]
    bottom = sorted(weight, key=weight.get)[: len(weight) // 4]
    assert sum(counts[i] for i in top) > sum(counts[i] for i in bottom)


def test_bad_sampling_is_refused_by_name(engine):
    with pytest.raises(Exception, match="sampling"):
        cnn_train.train_cnn(engine, cnn_train.CnnTrainOptions(**BASE, sampling="roulette"))


def test_training_value_is_out_of_sample_only():
    from app.recording.convergence import ConvergenceTracker
    from app.trainer import evaluate

    learned, flat = ConvergenceTracker(patience=5), ConvergenceTracker(patience=5)
    for loss in (2.0, 1.0, 0.5, 0.2):
        learned.update(loss)
    for loss in (1.0, 1.0, 1.0, 1.0):
        flat.update(loss)
    worse = {"accuracy": 0.40, "baseline_accuracy": 0.45, "mean_profit_per_call": -0.0004}
    better = {"accuracy": 0.50, "baseline_accuracy": 0.45, "mean_profit_per_call": 0.0002}
    assert evaluate.training_value(learned, worse, 0.001) < evaluate.training_value(flat, better, 0.001)
    assert evaluate.training_value(learned, better, 0.001) == evaluate.training_value(flat, better, 0.001)
    neutral = {"accuracy": 0.45, "baseline_accuracy": 0.45, "mean_profit_per_call": 0.0}
    assert evaluate.training_value(learned, neutral, 0.001) == 0.5
