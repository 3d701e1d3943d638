"""The main job as a user runs it: `trainsrv demo` on a fresh embedded data dir, then the
analysts' commands against what it left behind."""

import json

import matplotlib.image
import sqlalchemy as sa

from app.db.embedded import EmbeddedServer
from tests.e2e import cli


def _scalar(data_dir, sql):
    server = EmbeddedServer(data_dir)
    engine = sa.create_engine(server.acquire())
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()
    finally:
        engine.dispose()
        server.release()


def test_every_stage_produced_rows(demo):
    env, summary, data_dir = demo
    for table in (
        "candles",
        "input_packages",
        "predictions",
        "outcomes",
        "experiences",
        "training_steps",
        "gradient_blobs",
        "checkpoints",
    ):
        assert _scalar(data_dir, f"SELECT count(*) FROM {table}") > 0, table
    assert summary["stats"]["validated_outcomes"] > 0
    assert {s["model_kind"] for s in summary["sessions"]} == {"cnn", "rl"}
    assert all(s["status"] == "succeeded" for s in summary["sessions"])
    # Only jobs the trainer never started when the demo stopped it may be left (queued, no attempt).
    assert _scalar(data_dir, "SELECT count(*) FROM jobs WHERE state <> 'succeeded' AND attempts > 0") == 0
    assert _scalar(data_dir, "SELECT count(*) FROM jobs WHERE kind LIKE 'train%' AND dedupe_key NOT LIKE 'auto:%'") == 0
    stages = {s["stage"]: s for s in summary["stages"]}
    assert set(stages) == {"validate_outcomes", "detect_events", "build_experiences", "train_cnn", "train_rl"}
    assert all(s["runs"] >= 1 and s["first_s"] <= s["last_s"] for s in stages.values())


def test_every_session_went_through_the_gate_and_the_summary_ends_with_the_models(demo):
    env, summary, data_dir = demo
    models = summary["models"]
    judged = sum(d["decisions"] for d in models["decisions"] if d["action"] in ("promote", "refuse"))
    assert judged == len(summary["sessions"]) == _scalar(data_dir, "SELECT count(*) FROM model_deployments")
    assert _scalar(data_dir, "SELECT count(*) FROM jobs WHERE kind = 'promote_model' AND state = 'succeeded'") == judged
    deployed = {d["version"] for d in models["deployed"]}
    assert deployed == {r["version"] for r in models["live"] if r["is_current"]}
    # Once a model is deployed the orchestrator calls with it, and the calls carry its version.
    for r in models["live"]:
        assert r["predictions"] > 0 or r["deployment_id"] == max(x["deployment_id"] for x in models["live"])
    listed = cli.run("models", "list", env=env, check=True).stdout
    assert all(v in listed for v in deployed)


def test_training_went_through_the_queue_with_full_capture(demo):
    env, summary, data_dir = demo
    assert _scalar(data_dir, "SELECT count(*) FROM training_sessions WHERE job_id IS NULL") == 0
    assert _scalar(data_dir, "SELECT bool_and(capture_policy = 'full' AND replay_exact) FROM training_sessions")
    missing = _scalar(data_dir, "SELECT count(*) FROM training_steps t WHERE gradients_stored = 0")
    assert missing == 0


def test_replay_verified_bit_for_bit(demo):
    env, summary, data_dir = demo
    replay = summary["jobs"]["replay_session"]["result"]
    assert replay["exact"] is True and replay["checks"]
    assert summary["jobs"]["verify_integrity"]["result"]["problems"] == []


def test_report_writes_valid_images(demo, tmp_path):
    env, summary, data_dir = demo
    session = summary["sessions"][0]["session_id"]
    result = cli.run("report", str(session), "--out", str(tmp_path / "report"), env=env)
    assert result.returncode == 0, result.stderr
    pngs = list((tmp_path / "report").glob("*.png"))
    assert len(pngs) >= 3
    for png in pngs:
        assert matplotlib.image.imread(png).shape[0] > 100
    assert "<img" in (tmp_path / "report" / "index.html").read_text()


def test_similar_and_stats_commands(demo):
    env, summary, data_dir = demo
    newest = _scalar(data_dir, "SELECT max(id) FROM input_packages WHERE is_valid")
    result = cli.run("similar", str(newest), "-k", "5", "--json", env=env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert len(answer["neighbours"]) == 5 and answer["summary"]["neighbours"] == 5
    stats = json.loads(cli.run("stats", "--json", env=env, check=True).stdout)
    assert stats["summary"]["packages"] == summary["stats"]["packages"]
    assert stats["summary"]["gradient_bytes"] > 0
