"""RL training on experiences built from the real BTC-PERP candles, through the whole product path."""

import pytest
import sqlalchemy as sa
import torch

from app import cli, config
from app.db.engine import make_engine
from app.jobs import registry
from app.nets import dqn
from app.recording.optim import OptimizerSpec
from app.recording.policy import CapturePolicy
from app.rl_replay import buffer as rb
from app.trainer import jobs as trainer_jobs
from app.trainer import rl_train
from tests.rl_replay.support import SYMBOL, real_experiences


@pytest.fixture(scope="module")
def real(module_db_url, real_candles_path):
    engine = make_engine(module_db_url)
    ids = real_experiences(engine, real_candles_path)
    yield engine, ids
    engine.dispose()


def test_real_experiences_are_replayable(real):
    engine, ids = real
    assert len(ids) > 150
    buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=1)
    assert buffer.size(SYMBOL)["total"] == len(ids)
    assert 0 < buffer.size(SYMBOL)["profitable"] < len(ids)
    batch = buffer.sample(64, symbol=SYMBOL)
    assert set(batch.ids.tolist()) <= set(ids)
    assert batch.dones.any() or (batch.next_state_package_ids > 0).all()
    assert rb.index_problems(engine) == []


def test_invalid_packages_never_appear_in_a_batch(real):
    engine, ids = real
    with engine.begin() as conn:
        bad = [
            r[0]
            for r in conn.execute(
                sa.text("SELECT state_package_id FROM experiences ORDER BY priority DESC, id LIMIT 20")
            )
        ]
        conn.execute(sa.text("UPDATE input_packages SET is_valid = false WHERE id = ANY(:p)"), {"p": bad})
    try:
        buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=2)
        for _ in range(30):
            batch = buffer.sample(64, symbol=SYMBOL)
            assert not set(batch.state_package_ids.tolist()) & set(bad)
            assert not set(batch.next_state_package_ids.tolist()) & set(bad)
        assert rb.index_problems(engine) == []
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE input_packages SET is_valid = true WHERE id = ANY(:p)"), {"p": bad})


def test_short_training_run_reduces_td_loss_and_records_steps(real):
    engine, _ = real
    opts = rl_train.RlTrainOptions(
        symbol=SYMBOL,
        steps=60,
        batch_size=32,
        checkpoint_every=20,
        seed=3,
        agent=dqn.DqnSettings(target_update_every=20),
        device="cpu",
        optimizer=OptimizerSpec(name="adam", lr=3e-3, weight_decay=0.0, schedule="constant"),
    )
    result = rl_train.train_rl(engine, opts)
    assert result["status"] == "succeeded"
    assert result["td_loss_last"] < 0.6 * result["td_loss_first"]
    with engine.connect() as conn:
        session = (
            conn.execute(sa.text("SELECT * FROM training_sessions WHERE id = :s"), {"s": result["session_id"]})
            .mappings()
            .one()
        )
        steps = (
            conn.execute(
                sa.text("SELECT * FROM training_steps WHERE session_id = :s ORDER BY step"), {"s": result["session_id"]}
            )
            .mappings()
            .all()
        )
        grads = conn.execute(
            sa.text("SELECT count(DISTINCT step) FROM gradient_blobs WHERE session_id = :s"),
            {"s": result["session_id"]},
        ).scalar()
        ckpts = (
            conn.execute(
                sa.text("SELECT step FROM checkpoints WHERE session_id = :s ORDER BY step"), {"s": result["session_id"]}
            )
            .scalars()
            .all()
        )
        sampled = conn.execute(sa.text("SELECT sum(times_sampled) FROM experiences")).scalar()
    assert (session["model_kind"], session["status"], session["replay_exact"]) == ("rl", "succeeded", True)
    assert len(steps) == 60 and grads == 60 and ckpts == [0, 20, 40, 60]
    first = steps[0]
    assert {"td", "policy", "q_mean", "target_mean"} <= set(first["loss_components"])
    assert set(first["batch_profitability"]) >= {"mean_realised_profit", "profitable_share"}
    assert len(first["batch_ids"]) == 32
    assert 0.5 <= first["batch_profitability"]["profitable_share"] <= 1.0  # half drawn from profitable ones
    assert sampled >= 60 * 32


def test_training_priorities_follow_td_errors(real):
    engine, ids = real
    with engine.connect() as conn:
        before = dict(conn.execute(sa.text("SELECT id, priority FROM experiences")).all())
    rl_train.train_rl(
        engine,
        rl_train.RlTrainOptions(
            symbol=SYMBOL, steps=5, batch_size=16, seed=4, capture=CapturePolicy("none"), device="cpu"
        ),
    )
    with engine.connect() as conn:
        after = dict(conn.execute(sa.text("SELECT id, priority FROM experiences")).all())
    changed = [i for i in ids if after[i] != before[i]]
    assert 0 < len(changed) <= 5 * 16
    assert rb.index_problems(engine) == []


def test_job_and_cli_validate_parameters(real, monkeypatch):
    engine, _ = real
    handler = registry.get(trainer_jobs.RL_JOB)
    with pytest.raises(Exception, match="symbol"):
        handler.validate({})
    with pytest.raises(Exception, match="gamma"):
        handler.validate({"symbol": SYMBOL, "gamma": 1.5})
    params = handler.validate({"symbol": SYMBOL, "steps": "3", "batch_size": 8, "capture": "none"})
    result = handler.fn(registry.JobContext(engine=engine, settings=rl_train.get_settings(), job_id=None), params)
    assert result["status"] == "succeeded" and result["steps"] == 3
    monkeypatch.setenv("TRAINSRV_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    config.set_settings(None)
    try:
        assert cli.main(["train", "rl", "--symbol", "NOPE-PERP", "--steps", "2"]) == 1
        assert (
            cli.main(["train", "rl", "--symbol", SYMBOL, "--steps", "2", "--batch-size", "4", "--capture", "none"]) == 0
        )
    finally:
        config.set_settings(None)


def test_an_interrupted_rl_session_resumes_from_its_checkpoint(real, monkeypatch):
    engine, _ = real
    opts = rl_train.RlTrainOptions(
        symbol=SYMBOL,
        steps=24,
        batch_size=16,
        checkpoint_every=8,
        seed=5,
        agent=dqn.DqnSettings(target_update_every=6),
        device="cpu",
    )
    calls = iter(range(1000))
    stop_before_step_13 = rl_train.Hooks(should_stop=lambda: next(calls) >= 12)
    first = rl_train.train_rl(engine, opts, hooks=stop_before_step_13)
    assert first["status"] == "interrupted" and first["steps"] == 12
    monkeypatch.setenv("TRAINSRV_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    config.set_settings(None)
    try:
        assert cli.main(["train", "resume", str(first["session_id"])]) == 0
    finally:
        config.set_settings(None)
    with engine.connect() as conn:
        session = conn.execute(
            sa.text("SELECT status, metrics FROM training_sessions WHERE id = :s"), {"s": first["session_id"]}
        ).one()
        steps = (
            conn.execute(
                sa.text("SELECT step FROM training_steps WHERE session_id = :s ORDER BY step"),
                {"s": first["session_id"]},
            )
            .scalars()
            .all()
        )
        ckpts = (
            conn.execute(
                sa.text("SELECT step FROM checkpoints WHERE session_id = :s ORDER BY step"), {"s": first["session_id"]}
            )
            .scalars()
            .all()
        )
    assert session.status == "succeeded" and session.metrics["resumes"] == 1
    assert session.metrics["resumed_from_step"] == 12
    assert steps == list(range(1, 25)) and ckpts == [0, 8, 12, 16, 24]
    assert rb.index_problems(engine) == []


def test_unknown_symbol_is_a_clear_error(real):
    engine, _ = real
    with pytest.raises(Exception, match="no replayable experiences for 'XRP-PERP'"):
        rl_train.train_rl(engine, rl_train.RlTrainOptions(symbol="XRP-PERP", steps=1))


def test_q_network_plugin_is_checked():
    from app.errors import ValidationError
    from app.nets.interface import InputSpec

    spec = InputSpec(("1m",), 8)
    assert dqn.build_q_network(dqn.REFERENCE, spec, {"hidden": 16})(torch.zeros(3, 1, 5, 8)).shape == (3, 3)
    with pytest.raises(ValidationError, match="model"):
        dqn.build_q_network("app.nets.cnn:build", spec)
