"""Real CNN training on real candles with full backpropagation storage (one session per module)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
import torch

from app import config
from app.db.engine import make_engine
from app.demo import candle_episodes as support
from app.nets import inputs, interface
from app.nets.losses import LossWeights, cnn_loss
from app.recording import blobs, checkpoints
from app.recording.hooks import Hooks
from app.recording.optim import OptimizerSpec
from app.recording.policy import CapturePolicy
from app.trainer import cnn_train, episodes

OPTIONS = dict(
    symbol=support.SYMBOL,
    min_profitability=0.0,
    max_episodes=200,
    epochs=16,
    batch_size=16,
    model_config=support.SMALL_MODEL,
    checkpoint_every=40,
    seed=7,
    device="cpu",
    optimizer=OptimizerSpec(lr=3e-3, warmup_steps=5),
)


@pytest.fixture(scope="module")
def trained(module_db_url, real_candles_path):
    engine = make_engine(module_db_url)
    assert support.build_episodes(engine, real_candles_path) > 300
    result = cnn_train.train_cnn(engine, cnn_train.CnnTrainOptions(**OPTIONS))
    yield engine, result
    engine.dispose()


def _session(engine, session_id):
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM training_sessions WHERE id = :id"), {"id": session_id}).one()


def _steps(engine, session_id):
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT * FROM training_steps WHERE session_id = :id ORDER BY step"), {"id": session_id}
        ).all()


def _grads(conn, session_id, step) -> dict[str, torch.Tensor]:
    rows = conn.execute(
        sa.text(
            "SELECT param_name, chunk_index, chunk_count, dtype, shape, codec, checksum, data FROM gradient_blobs "
            "WHERE session_id = :s AND step = :step"
        ),
        {"s": session_id, "step": step},
    ).all()
    chunks: dict[str, list] = {}
    for r in rows:
        chunks.setdefault(r.param_name, []).append(
            blobs.Chunk(
                r.param_name,
                r.chunk_index,
                r.chunk_count,
                r.dtype,
                tuple(r.shape),
                r.codec,
                bytes(r.checksum),
                bytes(r.data),
            )
        )
    return {name: blobs.decode(c) for name, c in chunks.items()}


def _rebuild(engine, session_id, step):
    """Model and optimizer of ``session_id`` as they were after ``step`` (from its checkpoint)."""
    config = _session(engine, session_id).config
    spec_in = interface.InputSpec(**config["input_spec"])
    model = interface.build_model(config["model"], spec_in, config["model_config"])
    spec = OptimizerSpec.from_config(config["optimizer"])
    optimizer = spec.build(model.parameters())
    with engine.connect() as conn:
        ckpt = checkpoints.load(conn, session_id, step)
    checkpoints.restore(model, optimizer, ckpt.state)
    return model, optimizer, spec, spec_in, config


def test_session_succeeds_with_metrics_convergence_and_value(trained):
    engine, result = trained
    s = _session(engine, result["session_id"])
    assert s.status == "succeeded" and s.ended_at is not None and s.error is None
    assert s.capture_policy == "full" and s.replay_exact
    assert s.torch_version == torch.__version__ and s.device == "cpu" and s.seed == 7
    assert s.best_loss is not None and s.best_loss < s.metrics["first_loss_smoothed"]  # it learned something
    assert 0.0 <= s.training_value <= 1.0
    assert s.metrics["steps"] == result["steps"] >= 200


def test_every_step_has_losses_and_all_gradients(trained):
    engine, result = trained
    sid = result["session_id"]
    steps = _steps(engine, sid)
    n_params = sum(
        1
        for p in interface.build_model(
            interface.REFERENCE, interface.InputSpec(("1m", "5m"), 30), support.SMALL_MODEL
        ).parameters()
    )
    assert [s.step for s in steps] == list(range(1, result["steps"] + 1))
    for s in steps:
        assert set(s.loss_components) == {"classification", "regression", "confidence"}
        assert s.loss_total > 0 and s.grad_norm > 0 and s.learning_rate > 0
        assert 0 < len(s.batch_ids) <= 16
        assert set(s.batch_profitability) == {"mean_profitability_score", "mean_actual_profit", "share_profitable"}
        assert {"forward", "backward", "capture", "optimizer", "total"} <= set(s.timings_ms)
        assert s.gradients_stored == n_params
    with engine.connect() as conn:
        per_step = conn.execute(
            sa.text("SELECT step, count(DISTINCT param_name) FROM gradient_blobs WHERE session_id = :s GROUP BY step"),
            {"s": sid},
        ).all()
    assert len(per_step) == len(steps) and all(n == n_params for _, n in per_step)


def test_stored_gradients_equal_what_torch_computed(trained):
    """Recompute step c+1 from checkpoint c (same batch, same RNG) and compare bit for bit."""
    engine, result = trained
    sid = result["session_id"]
    model, optimizer, spec, spec_in, config = _rebuild(engine, sid, 40)
    step = _steps(engine, sid)[40]
    assert step.step == 41
    with engine.connect() as conn:
        eps = episodes.by_ids(conn, list(step.batch_ids))
        x, _ = inputs.load_inputs(conn, [e.package_id for e in eps], spec_in)
        stored = _grads(conn, sid, 41)
    action = torch.tensor([interface.ACTIONS.index(e.optimal_action) for e in eps])
    move = torch.tensor([e.move_pct for e in eps], dtype=torch.float32)
    prof = torch.tensor([e.profitability_score for e in eps], dtype=torch.float32)
    loss, _ = cnn_loss(model(x), action, move, prof, LossWeights(**config["loss_weights"]))
    loss.backward()
    assert float(loss.detach()) == step.loss_total
    torch.nn.utils.clip_grad_norm_(list(model.parameters()), spec.clip_grad_norm)
    names = dict(model.named_parameters())
    assert set(stored) == set(names)
    for name, grad in stored.items():
        assert grad.dtype == names[name].grad.dtype
        assert torch.equal(grad, names[name].grad), name


def test_stored_gradients_replay_to_the_next_checkpoint_bit_for_bit(trained):
    engine, result = trained
    sid = result["session_id"]
    model, optimizer, spec, _, _ = _rebuild(engine, sid, 40)
    with engine.connect() as conn:
        for step in range(41, 81):
            grads = _grads(conn, sid, step)
            for name, p in model.named_parameters():
                p.grad = grads[name]
            spec.apply_lr(optimizer, step)
            optimizer.step()
        target = checkpoints.load(conn, sid, 80)
    assert checkpoints.params_hash(model) == target.params_hash
    assert checkpoints.optimizer_hash(optimizer) == target.optimizer_hash


def test_checkpoints_at_start_every_k_and_end_load_weights_only(trained):
    engine, result = trained
    sid = result["session_id"]
    with engine.connect() as conn:
        kinds = conn.execute(
            sa.text("SELECT step, kind FROM checkpoints WHERE session_id = :s ORDER BY step"), {"s": sid}
        ).all()
        final = checkpoints.load(conn, sid)
    total = result["steps"]
    assert kinds[0] == (0, "start") and kinds[-1] == (total, "final")
    assert [s for s, k in kinds if k == "periodic"] == [s for s in range(40, total, 40)]
    assert set(final.state) == {"format", "step", "model", "optimizer", "rng", "extra"}


def test_evaluation_uses_only_later_data(trained):
    engine, result = trained
    sid = result["session_id"]
    s = _session(engine, sid)
    with engine.connect() as conn:
        train = episodes.by_ids(conn, s.config["train_episode_ids"])
        evaluation = episodes.by_ids(conn, s.config["eval_episode_ids"])
    used = {i for st in _steps(engine, sid) for i in st.batch_ids}
    assert used == set(s.config["train_episode_ids"])
    assert evaluation and not used & {e.episode_id for e in evaluation}
    assert max(e.horizon_end for e in train) <= min(e.ts for e in evaluation)
    ev = s.metrics["evaluation"]
    assert ev["episodes"] == len(evaluation)
    assert 0 <= ev["accuracy"] <= 1 and 0 <= ev["baseline_accuracy"] <= 1
    assert ev["from_ts"] == min(e.ts for e in evaluation).isoformat()


def test_times_trained_counts_every_use(trained):
    engine, result = trained
    sid = result["session_id"]
    uses: dict[int, int] = {}
    for st in _steps(engine, sid):
        for i in st.batch_ids:
            uses[i] = uses.get(i, 0) + 1
    with engine.connect() as conn:
        rows = dict(
            conn.execute(sa.text("SELECT prediction_id, times_trained FROM outcomes WHERE times_trained > 0")).all()
        )
    assert rows == uses
    assert set(uses.values()) == {16}  # every episode once per epoch


@pytest.mark.parametrize(
    "policy, codec, every", [(CapturePolicy("half"), "bf16", 1), (CapturePolicy("every_k", k=4), "raw", 4)]
)
def test_lossy_policies_are_marked_not_replay_exact(trained, policy, codec, every):
    engine, _ = trained
    opts = cnn_train.CnnTrainOptions(**dict(OPTIONS, epochs=1, max_episodes=64, capture=policy))
    result = cnn_train.train_cnn(engine, opts)
    s = _session(engine, result["session_id"])
    assert s.capture_policy == policy.name and not s.replay_exact
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT DISTINCT step, codec FROM gradient_blobs WHERE session_id = :s"), {"s": s.id}
        ).all()
    assert {c for _, c in rows} == {codec}
    assert sorted(st for st, _ in rows) == [st for st in range(1, result["steps"] + 1) if st % every == 0]


def test_interrupt_then_resume_continues_without_duplicate_steps(trained):
    engine, _ = trained
    opts = cnn_train.CnnTrainOptions(**dict(OPTIONS, epochs=2, max_episodes=64, checkpoint_every=3))
    calls = {"n": 0}

    def stop_after_five():
        calls["n"] += 1
        return calls["n"] > 5

    first = cnn_train.train_cnn(engine, opts, hooks=Hooks(should_stop=stop_after_five))
    assert first["status"] == "interrupted" and first["steps"] == 5
    assert _session(engine, first["session_id"]).status == "interrupted"
    done = cnn_train.resume_cnn(engine, first["session_id"])
    assert done["status"] == "succeeded"
    assert [s.step for s in _steps(engine, first["session_id"])] == list(range(1, done["steps"] + 1))


def test_bad_options_name_the_field(trained):
    engine, _ = trained
    with pytest.raises(Exception, match="min_profitability"):
        cnn_train.train_cnn(engine, cnn_train.CnnTrainOptions(**dict(OPTIONS, min_profitability=1.5)))
    with pytest.raises(Exception, match="model"):
        cnn_train.train_cnn(engine, cnn_train.CnnTrainOptions(**dict(OPTIONS, model="no.such.module:build")))
    with pytest.raises(episodes.NoEpisodes, match="NO-SUCH"):
        cnn_train.train_cnn(engine, cnn_train.CnnTrainOptions(**dict(OPTIONS, symbol="NO-SUCH")))
    with pytest.raises(episodes.NoEpisodes, match="min-profitability"):
        cnn_train.train_cnn(engine, cnn_train.CnnTrainOptions(**dict(OPTIONS, min_profitability=1.0, keep_holds=False)))


def test_profitability_filter_trains_only_on_episodes_at_or_above_it(trained):
    engine, _ = trained
    threshold = 0.6
    opts = dict(
        OPTIONS,
        min_profitability=threshold,
        keep_holds=False,
        max_episodes=10_000,
        epochs=1,
        capture=CapturePolicy("none"),
    )
    result = cnn_train.train_cnn(engine, cnn_train.CnnTrainOptions(**opts))
    config = _session(engine, result["session_id"]).config
    with engine.connect() as conn:
        before_cutoff = dict(
            conn.execute(
                sa.text(
                    "SELECT episode_id, profitability_score FROM v_cnn_replay "
                    "WHERE symbol = :s AND horizon_end <= :cutoff"
                ),
                {"s": support.SYMBOL, "cutoff": config["eval_cutoff"]},
            ).all()
        )
    passing = {e for e, score in before_cutoff.items() if score >= threshold}
    assert set(config["train_episode_ids"]) == passing
    assert 0 < len(passing) < len(before_cutoff)  # the filter really left episodes out


def test_a_plateau_marks_the_session_converged(trained, monkeypatch):
    engine, _ = trained
    # The small input (OHLCV cut to the shortest window) plateaus within these few epochs.
    monkeypatch.setenv("TRAINSRV_INPUT_WINDOWS", "shortest")
    monkeypatch.setenv("TRAINSRV_INPUT_FEATURES", "none")
    monkeypatch.setattr(config, "_current", None)  # re-read now; the cached settings come back afterwards
    opts = dict(OPTIONS, max_episodes=64, epochs=6, patience=3, capture=CapturePolicy("none"))
    result = cnn_train.train_cnn(engine, cnn_train.CnnTrainOptions(**opts))
    s = _session(engine, result["session_id"])
    assert s.status == "succeeded"
    assert s.converged is True and s.plateau_steps >= 3 and result["converged"] is True
