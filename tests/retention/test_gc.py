"""Retention (`trainsrv gc`): partitions dropped per session, policy and protection, a concurrent replay,
replay / verify on pruned sessions, the scheduled job, stats. Real CNN sessions trained on the real candles."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import sqlalchemy as sa
import torch

from app import cli, config
from app.db.engine import make_engine
from app.demo import candle_episodes as support
from app.jobs import registry
from app.jobs.scheduler import Scheduler
from app.recording.capture import CapturePolicy, GradientCapture
from app.recording.optim import OptimizerSpec
from app.recording.writer import BackgroundWriter, StepRecord
from app.retention import gc, policy
from app.session_replay import exact as replay
from app.session_replay import onto as replay_onto
from app.session_replay import verify
from app.trainer import cnn_train

OPTIONS = dict(
    symbol=support.SYMBOL,
    min_profitability=0.0,
    max_episodes=48,
    epochs=1,
    batch_size=16,
    model_config=support.SMALL_MODEL,
    checkpoint_every=1,
    seed=3,
    device="cpu",
    optimizer=OptimizerSpec(lr=3e-3, warmup_steps=1),
)


@dataclasses.dataclass
class World:
    engine: sa.Engine
    url: str


@pytest.fixture(scope="module")
def world(module_db_url, real_candles_path):
    engine = make_engine(module_db_url)
    assert support.build_episodes(engine, real_candles_path, minutes=500) > 60
    yield World(engine, module_db_url)
    engine.dispose()


@pytest.fixture
def sessions(world):
    """Three new exact sessions, oldest first; every older session of the module is pruned already."""
    _exec(world.engine, "UPDATE training_sessions SET keep = false")
    gc.run_gc(world.engine, policy.Policy(keep_newest=0, gradient_max_age_days=0, budget_bytes=1))
    made = [
        cnn_train.train_cnn(world.engine, cnn_train.CnnTrainOptions(**dict(OPTIONS, seed=s)))["session_id"]
        for s in (1, 2, 3)
    ]
    return made


def _exec(engine, sql: str, **params):
    with engine.begin() as conn:
        return conn.execute(sa.text(sql), params)


def _row(engine, sid: int):
    return _exec(engine, "SELECT * FROM training_sessions WHERE id = :s", s=sid).one()


def _blob_rows(engine, sid: int) -> int:
    return _exec(engine, "SELECT count(*) FROM gradient_blobs WHERE session_id = :s", s=sid).scalar_one()


def _partition(engine, sid: int) -> str | None:
    return _exec(engine, "SELECT to_regclass(gradient_blobs_partition(:s))::text", s=sid).scalar_one()


def _age(engine, sid: int, days: int) -> None:
    _exec(
        engine,
        "UPDATE training_sessions SET started_at = started_at - make_interval(days => :d), "
        "ended_at = ended_at - make_interval(days => :d) WHERE id = :s",
        s=sid,
        d=days,
    )


# -- partitions -----------------------------------------------------------------------------------------


def test_each_session_writes_its_own_partition_and_gc_drops_it_whole(world, sessions):
    old, mid, new = sessions
    assert all(_partition(world.engine, s) == f"gradient_blobs_s{s}" for s in sessions)
    in_partition = _exec(world.engine, f"SELECT count(*) FROM gradient_blobs_s{mid}").scalar_one()
    assert in_partition == _blob_rows(world.engine, mid) > 0
    report = gc.run_gc(world.engine, policy.Policy(keep_newest=2, gradient_max_age_days=0, budget_bytes=1))
    assert [(p.session_id, p.action, p.skipped) for p in report.pruned] == [(old, "gradients", None)]
    assert report.pruned[0].freed_bytes > 0 and report.gradient_bytes_after < report.gradient_bytes_before
    assert _partition(world.engine, old) is None and _blob_rows(world.engine, old) == 0
    assert _blob_rows(world.engine, mid) > 0 and _blob_rows(world.engine, new) > 0
    row = _row(world.engine, old)
    assert row.pruned == "gradients" and not row.replay_exact and row.pruned_at is not None
    assert "gradient budget" in row.pruned_reason
    steps = _exec(world.engine, "SELECT count(*) FROM training_steps WHERE session_id = :s", s=old).scalar_one()
    ckpts = _exec(world.engine, "SELECT count(*) FROM checkpoints WHERE session_id = :s", s=old).scalar_one()
    assert steps > 0 and ckpts > 0  # only the gradients went


def test_dry_run_changes_nothing(world, sessions):
    before = _exec(world.engine, "SELECT id, pruned, replay_exact FROM training_sessions ORDER BY id").all()
    report = gc.run_gc(
        world.engine, policy.Policy(keep_newest=0, gradient_max_age_days=0, budget_bytes=1), dry_run=True
    )
    assert {p.session_id for p in report.pruned} == set(sessions) and report.dry_run
    assert report.gradient_bytes_after == 0 < report.gradient_bytes_before
    assert _exec(world.engine, "SELECT id, pruned, replay_exact FROM training_sessions ORDER BY id").all() == before
    assert all(_blob_rows(world.engine, s) > 0 for s in sessions)


def test_age_limits_prune_gradients_then_checkpoints(world, sessions):
    old, mid, new = sessions
    _age(world.engine, old, 40)
    _age(world.engine, mid, 20)
    rules = policy.Policy(keep_newest=0, gradient_max_age_days=10, checkpoint_max_age_days=30)
    report = gc.run_gc(world.engine, rules)
    assert sorted((p.session_id, p.action) for p in report.pruned) == [(old, "all"), (mid, "gradients")]
    assert _row(world.engine, old).pruned == "all" and _row(world.engine, mid).pruned == "gradients"
    assert _exec(world.engine, "SELECT count(*) FROM checkpoints WHERE session_id = :s", s=old).scalar_one() == 0
    assert _row(world.engine, new).pruned is None and _blob_rows(world.engine, new) > 0
    assert gc.run_gc(world.engine, rules).pruned == []  # nothing left to do


def test_keep_and_lineage_are_never_pruned(world, sessions, monkeypatch, capsys):
    source, onto, other = sessions
    child = replay_onto.replay_onto(world.engine, source, str(onto))["session_id"]
    monkeypatch.setenv("TRAINSRV_DATABASE_URL", world.url)
    config.set_settings(None)
    try:
        assert cli.main(["keep", str(child)]) == 0
        assert f"session {child}: marked keep" in capsys.readouterr().out
        assert cli.main(["keep", "999999"]) == 1
    finally:
        config.set_settings(None)
    with world.engine.connect() as conn:
        reasons = dict(conn.execute(sa.text("SELECT session_id, reason FROM v_sessions_protected")).all())
    assert reasons[child] == "marked keep"
    assert reasons[source] == reasons[onto] == f"lineage of session {child} (marked keep)"
    report = gc.run_gc(world.engine, policy.Policy(keep_newest=0, gradient_max_age_days=0, budget_bytes=1))
    assert [p.session_id for p in report.pruned] == [other]
    assert all(_blob_rows(world.engine, s) > 0 for s in (source, onto, child))
    assert replay.replay_session(world.engine, child, replay.ReplayOptions(verify=True)).exact is True


def test_a_running_replay_blocks_pruning_and_a_pruned_session_refuses_replay(world, sessions):
    sid = sessions[0]
    reading, release = threading.Event(), threading.Event()
    result = {}

    def on_step(step: int) -> bool:
        reading.set()
        release.wait(60)
        return True

    def run():
        result["report"] = replay.replay_session(world.engine, sid, replay.ReplayOptions(verify=True), on_step)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert reading.wait(60)
        with world.engine.connect() as conn:
            listed = (
                conn.execute(sa.text("SELECT reason FROM v_sessions_protected WHERE session_id = :s"), {"s": sid})
                .scalars()
                .all()
            )
        assert "replay running" in listed
        rules = policy.Policy(keep_newest=0, gradient_max_age_days=0, budget_bytes=1)
        with world.engine.connect() as conn:
            assert sid not in [p.session_id for p in policy.plan(conn, rules).actions]
        # Planned before the replay took its lock: gc's own lock check still refuses it.
        item = gc.Pruned(sid, "gradients", "test")
        gc._prune(world.engine, item, 1.0)
        assert item.skipped == "a replay or a trainer is using it" and _blob_rows(world.engine, sid) > 0
    finally:
        release.set()
        thread.join(120)
    assert result["report"].exact is True and result["report"].divergence is None

    pruned = gc.run_gc(world.engine, policy.Policy(keep_newest=0, gradient_max_age_days=0, budget_bytes=1))
    assert sid in [p.session_id for p in pruned.pruned if p.skipped is None]
    with pytest.raises(replay.GradientsPruned, match=f"session {sid} cannot be replayed: its gradients were pruned"):
        replay.replay_session(world.engine, sid, replay.ReplayOptions(verify=True))
    with pytest.raises(replay.GradientsPruned):
        replay_onto.replay_onto(world.engine, sid, str(sessions[1]))


def test_cli_replay_refuses_in_one_line_and_verify_tells_pruned_from_missing(world, sessions, monkeypatch, capsys):
    pruned, damaged, intact = sessions
    gc.run_gc(world.engine, policy.Policy(keep_newest=2, gradient_max_age_days=0, budget_bytes=1))
    _exec(world.engine, "SELECT gradient_blobs_drop_partition(:s)", s=damaged)  # lost, not pruned
    monkeypatch.setenv("TRAINSRV_DATABASE_URL", world.url)
    config.set_settings(None)
    capsys.readouterr()  # gc's own log lines (an earlier in-process command configured logging): not the CLI's
    try:
        assert cli.main(["replay", "session", str(pruned), "--verify"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "its gradients were pruned by retention" in err
    finally:
        config.set_settings(None)
    ok = verify.verify_integrity(world.engine, pruned)
    assert ok.ok and ok.checked["pruned_sessions"] == 1
    assert any(f"session {pruned}: gradients pruned by retention" in n and "pruned, not missing" in n for n in ok.notes)
    bad = verify.verify_integrity(world.engine, damaged)
    assert not bad.ok and {p.kind for p in bad.problems} == {"missing_gradient"}
    assert verify.verify_integrity(world.engine, intact).ok


def test_gc_job_is_scheduled_once_per_window_and_runs(world, sessions):
    settings = dataclasses.replace(
        config.Settings(),
        enable_background_validation=False,
        gc_interval_s=3600.0,
        min_episodes_for_cnn_training=0,
        min_experiences_for_rl_training=0,
        gradient_keep_newest=1,
        gradient_max_age_days=0,
        gradient_budget_gb=1e-9,
    )
    with world.engine.begin() as conn:
        created = Scheduler(settings).tick(conn) + Scheduler(settings).tick(conn)
    assert len(created) == 1
    job = _exec(world.engine, "SELECT kind, params, dedupe_key FROM jobs WHERE id = :j", j=created[0]).one()
    assert job.kind == "gc" and job.dedupe_key.startswith("auto:gc:")
    handler = registry.get("gc")
    result = handler.fn(registry.JobContext(world.engine, settings), handler.validate(job.params))
    assert sorted(p["session_id"] for p in result["pruned"]) == sessions[:2]
    assert result["headroom_bytes"] is not None


def test_stats_show_storage_per_class_and_budget_headroom(world, sessions, monkeypatch, capsys):
    _exec(world.engine, "UPDATE training_sessions SET keep = true WHERE id = :s", s=sessions[0])
    monkeypatch.setenv("TRAINSRV_DATABASE_URL", world.url)
    monkeypatch.setenv("TRAINSRV_GRADIENT_KEEP_NEWEST", "1")
    monkeypatch.setenv("TRAINSRV_GRADIENT_BUDGET_GB", "1")
    config.set_settings(None)
    try:
        assert cli.main(["stats"]) == 0
        out = capsys.readouterr().out
        assert cli.main(["gc", "--dry-run"]) == 0
        dry = capsys.readouterr().out
    finally:
        config.set_settings(None)
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert lines["protected"].split()[1] == "1" and lines["newest"].split()[1] == "1"
    assert "gradient budget:" in out and "of 1024 MB used, headroom" in out
    assert "gradient_blobs" in out and int(lines["gradient_blobs"].split()[2]) > 0
    assert dry.startswith("gc (dry run): would prune 0 session(s)")


def test_gc_prunes_while_another_session_is_being_written(world, sessions):
    """DETACH waits only for the writer's open batch: the prune succeeds and the writer loses nothing."""
    model = torch.nn.Linear(256, 256)
    model(torch.randn(8, 256)).sum().backward()
    capture = GradientCapture(model.named_parameters(), CapturePolicy("full"), slots=4)
    live = _exec(
        world.engine,
        "INSERT INTO training_sessions (model_kind, model_name, seed, torch_version, "
        "trainsrv_version, device, capture_policy, replay_exact) VALUES ('other', 'linear', "
        "0, 'x', 'x', 'cpu', 'full', true) RETURNING id",
    ).scalar_one()
    started = threading.Event()

    def write():
        writer = BackgroundWriter(world.engine, live, max_batch=4)
        for step in range(1, 301):
            writer.submit(StepRecord(step, 1.0, {}, 1.0, 1e-3, [1], {}, {}, capture.capture(step)))
            started.set()
        writer.close()

    thread = threading.Thread(target=write)
    thread.start()
    try:
        assert started.wait(60)
        item = gc.Pruned(sessions[0], "gradients", "test")
        gc._prune(world.engine, item, 5.0)
    finally:
        thread.join(120)
    assert item.skipped is None and item.freed_bytes > 0 and _partition(world.engine, sessions[0]) is None
    stored = _exec(world.engine, "SELECT count(DISTINCT step) FROM gradient_blobs WHERE session_id = :s", s=live)
    assert stored.scalar_one() == 300


def test_a_checkpoint_still_referenced_is_skipped_not_an_error(world, sessions):
    # The model registry's init checkpoints reference checkpoints(id) with RESTRICT; any such reference does.
    old = sessions[0]
    _exec(world.engine, "CREATE TABLE IF NOT EXISTS stray_inits (checkpoint_id bigint REFERENCES checkpoints (id))")
    _exec(world.engine, "INSERT INTO stray_inits SELECT max(id) FROM checkpoints WHERE session_id = :s", s=old)
    _age(world.engine, old, 40)
    try:
        report = gc.run_gc(
            world.engine, policy.Policy(keep_newest=2, gradient_max_age_days=0, checkpoint_max_age_days=30)
        )
    finally:
        _exec(world.engine, "DROP TABLE stray_inits")
    assert [(p.session_id, p.action) for p in report.pruned] == [(old, "all")]
    assert report.pruned[0].skipped.startswith("still referenced") and report.pruned[0].freed_bytes == 0
    assert _row(world.engine, old).pruned is None and _blob_rows(world.engine, old) > 0  # rolled back whole
