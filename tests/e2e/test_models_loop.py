"""Trained models go back to the orchestrator, with real processes: ``trainsrv serve`` (scheduler on:
training, then the promotion gate as a follow-up job) and an orchestrator process streaming a market
through the client and predicting with ``Client.deployed_model``. Two promotions at least; the
orchestrator's later predictions carry the new versions; a worse candidate is refused; a rollback
restores the previous model and the orchestrator switches back to it."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from app import cli, config
from app.client import Client
from app.paths import REPO_ROOT

pytestmark = pytest.mark.slow

SYMBOL = "SIM-A"
ENV = {
    "TRAINSRV_VALIDATION_INTERVAL_S": "2",
    "TRAINSRV_SCHEDULE_CHECK_INTERVAL_S": "0.5",
    "TRAINSRV_POLL_INTERVAL_S": "0.5",
    "TRAINSRV_MIN_EPISODES_FOR_CNN_TRAINING": "10",
    "TRAINSRV_MIN_EXPERIENCES_FOR_RL_TRAINING": "24",
    "TRAINSRV_AUTO_CNN_PARAMS": json.dumps({"epochs": 6, "batch_size": 8, "capture": "none"}),
    "TRAINSRV_AUTO_RL_PARAMS": json.dumps({"steps": 40, "batch_size": 16, "capture": "none"}),
    # The baselines must be beaten (default margins 0); a fresher model may be a little worse than the
    # deployed one on its slice (both are good on this market, and ties would block every promotion).
    "TRAINSRV_GATE_MIN_EVAL_EPISODES": "6",
    "TRAINSRV_GATE_DEPLOYED_PROFIT_MARGIN": "-0.003",
    "TRAINSRV_GATE_DEPLOYED_ACCURACY_MARGIN": "-0.25",
}


def _process(args: list[str], env: dict, log_path) -> subprocess.Popen:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSRV_")}
    full_env.update(env)
    full_env.setdefault("LC_ALL", "C.UTF-8")
    return subprocess.Popen(
        [sys.executable, "-m", *args], env=full_env, cwd=REPO_ROOT, stdout=open(log_path, "w"), stderr=subprocess.STDOUT
    )


def _rows(engine, sql: str, **params) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


def _promotions(engine) -> list[dict]:
    return _rows(
        engine,
        "SELECT id, session_id, model_version(model_kind, session_id) AS version, decided_at "
        "FROM model_deployments WHERE model_kind = 'cnn' AND symbol = :s AND action = 'promote' "
        "ORDER BY id",
        s=SYMBOL,
    )


def _calls_with(engine, version: str, since) -> int:
    return _rows(
        engine, "SELECT count(*) AS n FROM predictions WHERE model_version = :v AND created_at > :t", v=version, t=since
    )[0]["n"]


def _wait(condition, seconds: float, *alive: subprocess.Popen, logs=None) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, logs.read_text()[-3000:] if logs else "timed out"
        for p in alive:
            assert p.poll() is None, logs.read_text()[-3000:] if logs else "a process died"
        time.sleep(1)


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def loop(module_db_url, tmp_path_factory):
    from app.db.engine import make_engine

    logs = tmp_path_factory.mktemp("models-loop")
    env = {**ENV, "TRAINSRV_DATABASE_URL": module_db_url}
    engine = make_engine(module_db_url)
    trainer = _process(["app.cli", "serve"], env, logs / "serve.jsonl")
    orchestrator = _process(
        ["tests.e2e.live_orchestrator", "--symbol", SYMBOL, "--hours", "48", "--speed", "300"],
        env,
        logs / "orchestrator.log",
    )
    try:
        yield engine, trainer, orchestrator, logs, env
    finally:
        for p in (orchestrator, trainer):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
        engine.dispose()


def test_promotions_reach_the_orchestrator_worse_is_refused_rollback_restores(loop, monkeypatch):
    engine, trainer, orchestrator, logs, env = loop

    # Two promotions by the loop itself, and the orchestrator calls with the second one afterwards.
    def promoted_twice_and_used():
        found = _promotions(engine)
        return len(found) >= 2 and _calls_with(engine, found[-1]["version"], found[-1]["decided_at"]) > 0

    _wait(promoted_twice_and_used, 900, trainer, orchestrator, logs=logs / "serve.jsonl")
    trainer.send_signal(signal.SIGTERM)  # no further automatic promotions from here on
    assert trainer.wait(timeout=120) == 0, (logs / "serve.jsonl").read_text()[-3000:]
    promotions = _promotions(engine)
    for earlier, later in zip(promotions, promotions[1:]):
        # After each promotion the orchestrator's calls carry the new version, not the old one (one
        # decision of grace: a call may have been in flight while the promotion committed).
        assert _calls_with(engine, later["version"], later["decided_at"]) > 0 or later is promotions[-1]
        stale = _calls_with(engine, earlier["version"], later["decided_at"])
        assert stale <= 1, (earlier, later, stale)
    jobs = _rows(engine, "SELECT kind, state, dedupe_key FROM jobs WHERE kind = 'promote_model'")
    assert jobs and all(j["dedupe_key"].startswith("auto:promote_model:") for j in jobs)

    monkeypatch.setenv("TRAINSRV_DATABASE_URL", env["TRAINSRV_DATABASE_URL"])
    for key in (
        "TRAINSRV_GATE_MIN_EVAL_EPISODES",
        "TRAINSRV_GATE_DEPLOYED_PROFIT_MARGIN",
        "TRAINSRV_GATE_DEPLOYED_ACCURACY_MARGIN",
    ):
        monkeypatch.setenv(key, ENV[key])
    config.set_settings(None)
    try:
        # A worse candidate (a model blind to its input) is trained by hand and refused by the gate.
        code, out = _cli(
            "train",
            "cnn",
            "--symbol",
            SYMBOL,
            "--model",
            "tests.e2e.blind_model:build",
            "--init",
            "scratch",
            "--promote",
            "no",
            "--epochs",
            "2",
            "--capture",
            "none",
            "--min-profitability",
            "0",
        )
        assert code == 0, out
        worse = json.loads(out)["session_id"]
        code, out = _cli("models", "promote", str(worse))
        decision = json.loads(out)
        assert code == 2 and decision["action"] == "refuse", decision
        checks = {c["check"]: c["passed"] for c in decision["evidence"]["checks"]}
        assert checks["clean"] and not checks["profit_vs_baseline"], checks
        incumbent = decision["evidence"]["incumbent"]
        assert incumbent["session_id"] == promotions[-1]["session_id"]
        assert decision["evidence"]["candidate"]["mean_profit_per_call"] < incumbent["mean_profit_per_call"]

        # A rollback restores the previous model; the running orchestrator switches back to it.
        code, out = _cli("models", "rollback", "cnn", SYMBOL, "--reason", "test")
        restored = json.loads(out)
        assert code == 0 and restored["session_id"] == promotions[-2]["session_id"]
        with Client(engine) as client:
            assert client.deployed_model("cnn", SYMBOL).version == promotions[-2]["version"]
        rolled_back_at = _rows(
            engine, "SELECT decided_at FROM model_deployments WHERE id = :i", i=restored["deployment_id"]
        )[0]["decided_at"]
        _wait(
            lambda: _calls_with(engine, promotions[-2]["version"], rolled_back_at) > 0,
            300,
            orchestrator,
            logs=logs / "orchestrator.log",
        )
    finally:
        config.set_settings(None)

    live = {
        (r["version"], r["action"]): r
        for r in _rows(engine, "SELECT * FROM v_model_live_performance WHERE model_kind = 'cnn'")
    }
    assert live[(promotions[-2]["version"], "rollback")]["is_current"]
    assert live[(promotions[-2]["version"], "rollback")]["predictions"] > 0
    assert all(live[(p["version"], "promote")]["predictions"] > 0 for p in promotions)
    assert any(r["validated"] > 0 and r["live_profit_per_call"] is not None for r in live.values())
    assert all(r["offline_profit_per_call"] is not None for r in live.values())
