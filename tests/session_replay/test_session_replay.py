"""Exact replay of real CNN sessions (trained here on the real candles), verified bit for bit;
corruption named by `trainsrv verify` and refused by replay; lossy sessions; replay onto a checkpoint."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa
import torch

from app import cli, config
from app.db.engine import make_engine
from app.demo import candle_episodes as support
from app.jobs import registry
from app.nets import cnn
from app.recording import checkpoints, stored_steps
from app.recording.hooks import Hooks
from app.recording.optim import OptimizerSpec
from app.recording.policy import CapturePolicy
from app.session_replay import exact, onto, options, verify
from app.trainer import cnn_train

OPTIONS = dict(
    symbol=support.SYMBOL,
    min_profitability=0.0,
    max_episodes=96,
    epochs=4,
    batch_size=16,
    model_config=support.SMALL_MODEL,
    checkpoint_every=5,
    seed=3,
    device="cpu",
    optimizer=OptimizerSpec(lr=3e-3, warmup_steps=3),
)


@dataclasses.dataclass
class World:
    engine: sa.Engine
    url: str
    exact: dict  # full capture, checkpoints every 5 steps
    lossy: dict  # half (bf16) capture, same model and optimizer


@pytest.fixture(scope="module")
def world(module_db_url, real_candles_path):
    engine = make_engine(module_db_url)
    assert support.build_episodes(engine, real_candles_path, minutes=900) > 200
    exact = cnn_train.train_cnn(engine, cnn_train.CnnTrainOptions(**OPTIONS))
    lossy = cnn_train.train_cnn(
        engine, cnn_train.CnnTrainOptions(**dict(OPTIONS, epochs=2, seed=5, capture=CapturePolicy("half")))
    )
    yield World(engine, module_db_url, exact, lossy)
    engine.dispose()


@pytest.fixture
def victim(world):
    """A short exact session of its own, for tests that corrupt what they read."""
    opts = cnn_train.CnnTrainOptions(**dict(OPTIONS, epochs=1, checkpoint_every=2, seed=11))
    return cnn_train.train_cnn(world.engine, opts)["session_id"]


def _exec(engine, sql: str, **params):
    with engine.begin() as conn:
        return conn.execute(sa.text(sql), params)


def _first_param(engine, session_id: int, step: int) -> str:
    return _exec(
        engine, "SELECT min(param_name) FROM gradient_blobs WHERE session_id = :s AND step = :st", s=session_id, st=step
    ).scalar_one()


def _checkpoint_steps(engine, session_id: int) -> list[int]:
    with engine.connect() as conn:
        return checkpoints.list_steps(conn, session_id)


FLIP = "UPDATE {table} SET {col} = set_byte({col}, 7, 255 - get_byte({col}, 7)) WHERE {where}"


# -- exact replay ---------------------------------------------------------------------------------------


def test_full_replay_reproduces_every_checkpoint_bit_for_bit(world):
    sid, steps = world.exact["session_id"], world.exact["steps"]
    report = exact.replay_session(world.engine, sid, options.ReplayOptions(verify=True))
    assert report.start_checkpoint == 0 and report.to_step == steps == report.steps_applied
    assert [c.step for c in report.checks] == _checkpoint_steps(world.engine, sid)[1:]
    assert all(c.params_match and c.optimizer_match for c in report.checks)
    assert report.exact is True and report.divergence is None and report.notes == []
    with world.engine.connect() as conn:
        final = checkpoints.load(conn, sid, steps)
    assert report.final_params_hash == final.params_hash.hex()


def test_replay_runs_no_forward_and_no_backward(world, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("replay must not run a forward or backward pass")

    monkeypatch.setattr(cnn.MultiTimeframeCNN, "forward", forbidden)
    monkeypatch.setattr(torch.Tensor, "backward", forbidden)
    report = exact.replay_session(world.engine, world.exact["session_id"], options.ReplayOptions(verify=True))
    assert report.exact is True


def test_replay_from_a_middle_checkpoint(world):
    sid = world.exact["session_id"]
    report = exact.replay_session(world.engine, sid, options.ReplayOptions(from_step=12, to_step=17, verify=True))
    assert report.start_checkpoint == 10 and report.to_step == 17 and report.steps_applied == 7
    assert [c.step for c in report.checks] == [15] and report.exact is True
    with pytest.raises(Exception, match="to_step"):
        exact.replay_session(world.engine, sid, options.ReplayOptions(from_step=12, to_step=5))
    with pytest.raises(Exception, match="to_step"):
        exact.replay_session(world.engine, sid, options.ReplayOptions(to_step=world.exact["steps"] + 1))


def test_a_changed_gradient_with_a_valid_checksum_diverges_at_the_next_checkpoint(world, victim):
    """The divergence is reported between the last matching checkpoint and the first differing one,
    naming the parameter whose stored update changed."""
    param = _first_param(world.engine, victim, 3)
    # byte 3 holds the sign and exponent of the first float32: a large change of one gradient value
    _exec(
        world.engine,
        "UPDATE gradient_blobs SET data = set_byte(data, 3, 255 - get_byte(data, 3)) "
        "WHERE session_id = :s AND step = 3 AND param_name = :p",
        s=victim,
        p=param,
    )
    _exec(
        world.engine,
        "UPDATE gradient_blobs SET checksum = sha256(data) WHERE session_id = :s AND step = 3 AND param_name = :p",
        s=victim,
        p=param,
    )
    report = exact.replay_session(world.engine, victim, options.ReplayOptions(verify=True))
    assert report.exact is False
    assert (report.divergence.step, report.divergence.last_matching_step) == (4, 2)
    assert report.divergence.params_differing == [param]
    assert report.divergence.reason == "parameters and optimizer state differ from the checkpoint at step 4"
    assert [c.matches for c in report.checks] == [True, False]  # stops at the first divergence


def test_a_learning_rate_off_the_schedule_is_reported_at_its_step(world, victim):
    _exec(
        world.engine,
        "UPDATE training_steps SET learning_rate = learning_rate * 2 WHERE session_id = :s AND step = 3",
        s=victim,
    )
    report = exact.replay_session(world.engine, victim, options.ReplayOptions(verify=True))
    assert report.exact is False and report.divergence.step == 3
    assert "learning rate" in report.divergence.reason


# -- corruption: verify names it, replay refuses it ---------------------------------------------------


def test_flipped_byte_is_named_by_verify_and_refused_by_replay(world, victim):
    assert verify.verify_integrity(world.engine, victim).ok
    param = _first_param(world.engine, victim, 4)
    _exec(
        world.engine,
        FLIP.format(table="gradient_blobs", col="data", where="session_id = :s AND step = 4 AND param_name = :p"),
        s=victim,
        p=param,
    )
    report = verify.verify_integrity(world.engine, victim)
    assert [(p.kind, p.session_id, p.step, p.param, p.chunk) for p in report.problems] == [
        ("blob_checksum_mismatch", victim, 4, param, 0)
    ]
    with pytest.raises(stored_steps.CorruptedBlob) as err:
        exact.replay_session(world.engine, victim, options.ReplayOptions(verify=True))
    assert f"session {victim}, step 4: {param}: chunk 0 checksum mismatch" in str(err.value)
    # the steps before the corrupted one still replay and verify
    ok = exact.replay_session(world.engine, victim, options.ReplayOptions(verify=True, to_step=2))
    assert ok.exact is True and ok.steps_applied == 2


def test_missing_chunk_missing_param_and_missing_step_are_listed(world, victim):
    p2, p5 = _first_param(world.engine, victim, 2), _first_param(world.engine, victim, 5)
    _exec(
        world.engine,
        "UPDATE gradient_blobs SET chunk_count = 2 WHERE session_id = :s AND step = 2 AND param_name = :p",
        s=victim,
        p=p2,
    )
    _exec(
        world.engine,
        "DELETE FROM gradient_blobs WHERE session_id = :s AND step = 5 AND param_name = :p",
        s=victim,
        p=p5,
    )
    _exec(world.engine, "DELETE FROM training_steps WHERE session_id = :s AND step = 4", s=victim)
    found = {(p.kind, p.step, p.param, p.chunk) for p in verify.verify_integrity(world.engine, victim).problems}
    assert found == {
        ("blob_missing_chunk", 2, p2, 1),
        ("missing_gradient", 5, p5, None),
        ("missing_step", 4, None, None),
        ("orphan_blobs", 4, None, None),
    }
    problems = {p.kind: p for p in verify.verify_integrity(world.engine, victim).problems}
    assert p5 in problems["missing_gradient"].detail
    with pytest.raises(stored_steps.CorruptedBlob, match=f"step 2: {p2}: chunks"):
        exact.replay_session(world.engine, victim)
    with pytest.raises(exact.ReplayError, match=f"step 5: .*{p5}"):
        exact.replay_session(world.engine, victim, options.ReplayOptions(from_step=4))
    with pytest.raises(exact.ReplayError, match="step 4 missing"):
        exact.replay_session(world.engine, victim, options.ReplayOptions(from_step=3, to_step=4))


def test_corrupted_checkpoint_is_named_and_refused(world, victim):
    _exec(world.engine, FLIP.format(table="checkpoints", col="state", where="session_id = :s AND step = 2"), s=victim)
    problems = verify.verify_integrity(world.engine, victim).problems
    assert [(p.kind, p.table, p.step) for p in problems] == [("checkpoint_hash_mismatch", "checkpoints", 2)]
    with pytest.raises(checkpoints.CheckpointError, match="step 2"):
        exact.replay_session(world.engine, victim, options.ReplayOptions(from_step=3))


def test_tampered_input_package_is_listed(world):
    sid = world.exact["session_id"]
    pid = _exec(
        world.engine,
        "SELECT p.package_id FROM training_steps s JOIN predictions p "
        "ON p.id = s.batch_ids[1] WHERE s.session_id = :s AND s.step = 1",
        s=sid,
    ).scalar_one()
    flip = FLIP.format(table="input_packages", col="payload", where="id = :id")
    _exec(world.engine, flip, id=pid)
    try:
        report = verify.verify_integrity(world.engine, sid)
        assert [(p.kind, p.table, p.row_id) for p in report.problems] == [
            ("package_hash_mismatch", "input_packages", pid)
        ]
        whole = verify.verify_integrity(world.engine)  # other tests' victims are corrupted on purpose
        assert [p.row_id for p in whole.problems if p.table == "input_packages"] == [pid]
        assert whole.checked["packages"] > report.checked["packages"] > 1
    finally:
        _exec(world.engine, flip, id=pid)  # flipping the same byte back restores it
    assert verify.verify_integrity(world.engine, sid).ok


# -- lossy sessions ---------------------------------------------------------------------------------


def test_lossy_session_refuses_verification_but_replays_approximately(world):
    sid = world.lossy["session_id"]
    with pytest.raises(exact.NotReplayExact, match="cannot be verified: its gradients were stored rounded to bf16"):
        exact.replay_session(world.engine, sid, options.ReplayOptions(verify=True))
    with pytest.raises(exact.NotReplayExact, match="--approximate"):
        exact.replay_session(world.engine, sid)
    report = exact.replay_session(world.engine, sid, options.ReplayOptions(approximate=True))
    assert report.exact is None and report.steps_applied == world.lossy["steps"]
    assert report.checks and all(c.max_abs_diff is not None for c in report.checks)
    # bf16-rounded gradients move the weights close to, but not onto, the recorded ones
    assert 0 < report.checks[-1].max_abs_diff < 0.05


# -- replay onto another starting point ---------------------------------------------------------------


def _session(engine, sid):
    return _exec(engine, "SELECT * FROM training_sessions WHERE id = :id", id=sid).one()


def test_replay_onto_another_checkpoint_records_a_new_exact_session(world):
    source, target = world.exact["session_id"], world.lossy["session_id"]
    result = onto.replay_onto(world.engine, source, str(target), options.OntoOptions(checkpoint_every=8))
    new = _session(world.engine, result["session_id"])
    assert new.parent_session_id == source and new.status == "succeeded" and new.replay_exact
    assert new.config["replay"]["onto_session_id"] == target
    assert new.config["replay"]["onto_step"] == world.lossy["steps"]
    assert result["steps"] == world.exact["steps"]
    assert _checkpoint_steps(world.engine, new.id) == [0, 8, 16, 24]
    src_steps = _exec(
        world.engine, "SELECT step, batch_ids FROM training_steps WHERE session_id = :s ORDER BY step", s=source
    ).all()
    new_steps = _exec(
        world.engine, "SELECT step, batch_ids FROM training_steps WHERE session_id = :s ORDER BY step", s=new.id
    ).all()
    assert new_steps == src_steps
    with world.engine.connect() as conn:
        start = checkpoints.load(conn, new.id, 0)
        target_ckpt = checkpoints.load(conn, target, world.lossy["steps"])
    assert start.params_hash == target_ckpt.params_hash
    assert result["final_params_hash"] != exact.replay_session(world.engine, source).final_params_hash
    again = exact.replay_session(world.engine, new.id, options.ReplayOptions(verify=True))
    assert again.exact is True and len(again.checks) == 3


def test_replay_onto_the_source_own_checkpoint_reproduces_the_source(world):
    source = world.exact["session_id"]
    result = onto.replay_onto(world.engine, source, f"{source}@10", options.OntoOptions(from_step=10))
    assert result["steps"] == world.exact["steps"] - 10
    with world.engine.connect() as conn:
        final = checkpoints.load(conn, source)
    assert result["final_params_hash"] == final.params_hash.hex()
    new = _session(world.engine, result["session_id"])
    assert new.config["replay"]["step_offset"] == 10
    assert exact.replay_session(world.engine, new.id, options.ReplayOptions(verify=True)).exact is True


def test_interrupted_replay_onto_resumes_to_the_same_weights(world):
    source = world.exact["session_id"]
    calls = iter(range(10_000))
    hooks = Hooks(should_stop=lambda: next(calls) >= 6)
    first = onto.replay_onto(
        world.engine, source, f"{source}@10", options.OntoOptions(from_step=10, checkpoint_every=4), hooks=hooks
    )
    assert first["status"] == "interrupted" and first["steps"] == 6
    assert _session(world.engine, first["session_id"]).status == "interrupted"
    assert _checkpoint_steps(world.engine, first["session_id"]) == [0, 4, 6]
    done = onto.resume_onto(world.engine, first["session_id"])
    with world.engine.connect() as conn:
        final = checkpoints.load(conn, source)
    assert done["status"] == "succeeded" and done["final_params_hash"] == final.params_hash.hex()
    steps = (
        _exec(
            world.engine, "SELECT step FROM training_steps WHERE session_id = :s ORDER BY step", s=first["session_id"]
        )
        .scalars()
        .all()
    )
    assert steps == list(range(1, world.exact["steps"] - 10 + 1))
    with pytest.raises(Exception, match="not recorded by a replay"):
        onto.resume_onto(world.engine, source)


def test_replay_onto_refuses_bad_targets(world):
    source = world.exact["session_id"]
    for bad, field in (("nonsense", "onto"), ("checkpoint:999999", "onto"), (f"{source}@3", "checkpoint at step 3")):
        with pytest.raises(Exception, match=field):
            onto.replay_onto(world.engine, source, bad)
    with pytest.raises(exact.NotReplayExact, match="--approximate"):
        onto.replay_onto(world.engine, world.lossy["session_id"], str(source))


# -- CLI and jobs ---------------------------------------------------------------------------------------


def test_cli_replay_verify_and_integrity_check(world, monkeypatch, capsys):
    monkeypatch.setenv("TRAINSRV_DATABASE_URL", world.url)
    config.set_settings(None)
    sid = world.exact["session_id"]
    try:
        assert cli.main(["replay", "session", str(sid), "--verify"]) == 0
        out = capsys.readouterr().out
        assert "bit-exact: " in out and "from checkpoint 0" in out
        # A part of the session, however exact, is not a verified session.
        assert cli.main(["replay", "session", str(sid), "--verify", "--from-step", "10"]) == 1
        out = capsys.readouterr().out
        assert "NOT VERIFIED WHOLE: 3/3 checkpoints reproduced" in out and "not at step 0" in out
        assert cli.main(["replay", "session", str(world.lossy["session_id"]), "--verify"]) == 1
        assert "cannot be verified" in capsys.readouterr().err
        assert cli.main(["verify", "--session", str(sid)]) == 0
        assert "ok: no corrupted or missing rows" in capsys.readouterr().out
        assert cli.main(["replay", "session", str(sid), "--capture", "none"]) == 1
        assert "capture: only applies with onto" in capsys.readouterr().err
        assert cli.main(["replay", "session", str(sid), "--onto", str(sid), "--verify"]) == 1
        assert "verify: does not apply with onto" in capsys.readouterr().err
    finally:
        config.set_settings(None)


def test_job_kinds_run_replay_and_verification(world):
    ctx = registry.JobContext(engine=world.engine, settings=config.Settings())
    sid = world.exact["session_id"]
    replay_job = registry.get("replay_session")
    result = replay_job.fn(ctx, replay_job.validate({"session_id": sid, "verify": True}))
    assert result["exact"] is True and result["checkpoints_matched"] == len(result["checks"])
    verify_job = registry.get("verify_integrity")
    assert verify_job.fn(ctx, verify_job.validate({"session_id": sid}))["ok"] is True
    with pytest.raises(Exception, match="session_id"):
        replay_job.validate({"session_id": 0})
