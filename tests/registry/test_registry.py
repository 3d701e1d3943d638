"""The model registry on real BTC-PERP data: warm starts and lineage, the promotion gate, contamination,
rollback, NOTIFY, export, the RL hold-out and evaluation, the client's deployed model, the loss columns."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest
import sqlalchemy as sa
import torch

from app import cli, config
from app.client import Client
from app.config import Settings
from app.db.engine import make_engine
from app.demo.candle_episodes import SMALL_MODEL
from app.errors import TrainsrvError, ValidationError
from app.ingest.builder import package_from_candles
from app.recording.optim import OptimizerSpec
from app.recording.policy import CapturePolicy
from app.registry import export, gate, loader, store, warm
from app.trainer import cnn_train, rl_train
from tests.registry.support import SYMBOL, cnn_and_rl_calls

# Margins that let any clean candidate through: these tests are about the registry's bookkeeping;
# the margins themselves are tested with a candidate that cannot clear them.
LENIENT = Settings(
    gate_profit_margin=-1.0,
    gate_accuracy_margin=-1.0,
    gate_deployed_profit_margin=-1.0,
    gate_deployed_accuracy_margin=-1.0,
    gate_min_eval_episodes=1,
)


@pytest.fixture(scope="module")
def engine(module_db_url, real_candles_path):
    eng = make_engine(module_db_url)
    cnn_and_rl_calls(eng, real_candles_path)
    yield eng
    eng.dispose()


def cnn(engine, *, init="scratch", eval_fraction=0.2, seed=0, epochs=1) -> int:
    opts = cnn_train.CnnTrainOptions(
        symbol=SYMBOL,
        min_profitability=0.0,
        epochs=epochs,
        batch_size=16,
        eval_fraction=eval_fraction,
        model_config=SMALL_MODEL,
        optimizer=OptimizerSpec(lr=3e-3),
        capture=CapturePolicy("none"),
        checkpoint_every=100,
        seed=seed,
        device="cpu",
        init=init,
    )
    return cnn_train.train_cnn(engine, opts)["session_id"]


def rl(engine, *, init="scratch", steps=20, seed=0) -> dict:
    opts = rl_train.RlTrainOptions(
        symbol=SYMBOL,
        steps=steps,
        batch_size=16,
        model_config={"hidden": 16},
        capture=CapturePolicy("none"),
        checkpoint_every=100,
        seed=seed,
        device="cpu",
        init=init,
    )
    return rl_train.train_rl(engine, opts)


def session(engine, session_id: int):
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM training_sessions WHERE id = :i"), {"i": session_id}).one()


def test_warm_start_records_lineage_and_starts_from_the_deployed_weights(engine):
    a = cnn(engine)
    assert gate.run(engine, a, settings=LENIENT).action == "promote"
    b = cnn(engine, init="deployed", seed=1)
    sb = session(engine, b)
    assert sb.init_session_id == a and sb.config["init"]["session_id"] == a
    with engine.connect() as conn:
        start_b = conn.execute(
            sa.text("SELECT params_hash FROM checkpoints WHERE session_id = :s AND step = 0"), {"s": b}
        ).scalar()
        final_a = conn.execute(
            sa.text("SELECT params_hash FROM checkpoints WHERE session_id = :s ORDER BY step DESC LIMIT 1"), {"s": a}
        ).scalar()
        chain = conn.execute(
            sa.text("SELECT depth, session_id FROM v_model_lineage WHERE model_session_id = :s ORDER BY depth"),
            {"s": b},
        ).all()
    assert bytes(start_b) == bytes(final_a)  # step 0 of B holds A's final weights
    assert [tuple(r) for r in chain] == [(0, b), (1, a)]
    scratch = cnn(engine, init="scratch", seed=2)
    assert session(engine, scratch).init_session_id is None


def test_explicit_init_refuses_another_architecture(engine):
    a = cnn(engine)
    opts = cnn_train.CnnTrainOptions(
        symbol=SYMBOL,
        min_profitability=0.0,
        epochs=1,
        model_config={"channels": 4},
        capture=CapturePolicy("none"),
        device="cpu",
        init=f"session:{a}",
    )
    with pytest.raises(ValidationError, match="init"):
        cnn_train.train_cnn(engine, opts)
    with pytest.raises(ValidationError, match="init"):
        warm.parse("session:x")


def test_sessions_record_trained_through_before_their_clean_slice(engine):
    s = session(engine, cnn(engine))
    ev = s.metrics["evaluation"]
    cutoff = s.config["eval_cutoff"]
    assert s.trained_through is not None and s.trained_through.isoformat() <= cutoff
    assert ev["contaminated"] is False and ev["contaminated_by"] == []
    assert s.training_value is not None


def test_contaminated_lineage_is_recorded_and_refused(engine):
    late = cnn(engine, eval_fraction=0.1)  # trained on data up to the last 10 %
    early = cnn(engine, eval_fraction=0.5, init=f"session:{late}", seed=4)  # evaluated on the last 50 %
    s = session(engine, early)
    assert s.init_session_id == late
    ev = s.metrics["evaluation"]
    assert ev["contaminated"] is True and [m["session_id"] for m in ev["contaminated_by"]] == [late]
    assert s.training_value is None  # a contaminated slice proves nothing
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT session_id, depth FROM model_contamination(:s, :t)"),
            {"s": early, "t": s.config["eval_cutoff"]},
        ).all()
        value = conn.execute(
            sa.text("SELECT beats_baseline, eval_contaminated FROM v_session_value WHERE session_id = :s"), {"s": early}
        ).one()
    assert [tuple(r) for r in rows] == [(late, 1)]
    assert value.eval_contaminated is True and value.beats_baseline is False
    decision = gate.run(engine, early, settings=LENIENT)
    assert decision.action == "refuse" and "clean" in decision.reason
    assert decision.evidence["candidate"]["contaminated_by"][0]["session_id"] == late


def test_gate_refuses_a_candidate_below_the_margin_and_keeps_the_deployed_model(engine):
    candidate = cnn(engine, seed=5)
    with engine.connect() as conn:
        before = store.deployed(conn, "cnn", SYMBOL)
    strict = Settings(gate_profit_margin=1.0, gate_accuracy_margin=0.0, gate_min_eval_episodes=1)
    decision = gate.run(engine, candidate, settings=strict)
    assert decision.action == "refuse"
    checks = {c["check"]: c for c in decision.evidence["checks"]}
    assert not checks["profit_vs_baseline"]["passed"] and checks["clean"]["passed"]
    assert decision.evidence["slice"]["episodes"] > 0
    with engine.connect() as conn:
        after = store.deployed(conn, "cnn", SYMBOL)
        row = conn.execute(
            sa.text("SELECT action, evidence FROM model_deployments WHERE id = :i"), {"i": decision.deployment_id}
        ).one()
    assert (after.session_id if after else None) == (before.session_id if before else None)
    assert row.action == "refuse" and row.evidence["candidate"]["session_id"] == candidate


def test_promotion_notifies_and_rollbacks_walk_back(engine, module_db_url):
    first, second = cnn(engine, seed=6), cnn(engine, seed=7)
    url = make_engine(module_db_url).url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute("LISTEN trainsrv_models")
        assert gate.run(engine, first, settings=LENIENT).action == "promote"
        assert gate.run(engine, second, settings=LENIENT).action == "promote"
        notes = [json.loads(n.payload) for n in listener.notifies(timeout=2, stop_after=2)]
    assert [(n["action"], n["session_id"], n["version"]) for n in notes] == [
        ("promote", first, f"cnn-s{first}"),
        ("promote", second, f"cnn-s{second}"),
    ]
    assert gate.run(engine, second, settings=LENIENT).action == "none"  # already deployed: no new row
    back = store.rollback(engine, "cnn", SYMBOL, reason="test")
    assert back["session_id"] == first and back["previous_session_id"] == second
    with engine.connect() as conn:
        assert store.deployed(conn, "cnn", SYMBOL).session_id == first
    further = store.rollback(engine, "cnn", SYMBOL)
    assert further["session_id"] not in (first, second)  # walks back past both, not to `second` again
    with pytest.raises(ValidationError):
        store.rollback(engine, "cnn", SYMBOL, to=further["session_id"])
    store.rollback(engine, "cnn", SYMBOL, to=second)
    with engine.connect() as conn:
        assert store.deployed(conn, "cnn", SYMBOL).session_id == second


def test_rollback_needs_an_earlier_model(engine):
    with pytest.raises(TrainsrvError, match="no rl model"):
        store.rollback(engine, "rl", "NOPE")


def test_rl_trains_only_before_its_slice_and_is_evaluated_like_the_cnn(engine):
    result = rl(engine)
    s = session(engine, result["session_id"])
    ev = s.metrics["evaluation"]
    assert ev["episodes"] > 0 and ev["contaminated"] is False
    for key in (
        "accuracy",
        "baseline_accuracy",
        "mean_profit_per_call",
        "hit_rate",
        "best_constant_action",
        "best_constant_profit_per_call",
        "constant_profit_per_call",
    ):
        assert key in ev
    assert s.training_value == result["training_value"] and s.training_value is not None
    with engine.connect() as conn:
        late = conn.execute(
            sa.text(
                "SELECT count(*) FROM training_steps t, unnest(t.batch_ids) id "
                "JOIN v_training_data_end d ON d.model_kind = 'rl' AND d.item_id = id "
                "WHERE t.session_id = :s AND d.data_end > CAST(:c AS timestamptz)"
            ),
            {"s": s.id, "c": s.config["eval_cutoff"]},
        ).scalar()
        steps = conn.execute(
            sa.text("SELECT count(*), min(cardinality(batch_ids)) FROM training_steps WHERE session_id = :s"),
            {"s": s.id},
        ).one()
    assert late == 0 and steps == (20, 16)
    decision = gate.run(engine, s.id, settings=LENIENT)
    assert decision.action == "promote" and decision.evidence["candidate"]["episodes"] == ev["episodes"]


def test_client_gets_the_deployed_model_ready_to_run(engine):
    with Client(engine) as client:
        assert client.deployed_model("cnn", "NOPE") is None
        model = client.deployed_model("cnn", SYMBOL)
        assert model.version == client.deployed_version("cnn", SYMBOL)
        with engine.connect() as conn:
            at = conn.execute(sa.text("SELECT max(ts) FROM input_packages")).scalar()
            package = package_from_candles(conn, SYMBOL, at)
        action, confidence = model.call(package)
        assert action in ("long", "short", "hold") and 0 <= confidence <= 1
        assert not model.module.training
        rl_model = client.deployed_model("rl", SYMBOL)
        assert rl_model.call(package)[0] in ("long", "short", "hold")


def test_export_writes_weights_spec_and_torchscript(engine, tmp_path):
    with engine.connect() as conn:
        deployed = store.deployed(conn, "cnn", SYMBOL)
    spec = export.export(engine, deployed.session_id, tmp_path)
    assert spec["version"] == deployed.version and spec["files"]["torchscript"] == "model.pt"
    model = loader.load(engine, deployed.session_id)
    x = torch.randn((3, *model.input_spec.shape()))
    scripted = torch.jit.load(str(tmp_path / "model.pt"))
    assert torch.allclose(scripted(x)["logits"], model.module(x)["logits"], atol=1e-5)
    state = torch.load(tmp_path / "state_dict.pt", weights_only=True)
    assert set(state) == set(model.module.state_dict())
    assert json.loads((tmp_path / "spec.json").read_text())["input_spec"]["window"] == model.input_spec.window


def test_loss_columns_say_raw_or_smoothed_and_agree(engine):
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM v_session_value WHERE status = 'succeeded'")).all()
    assert rows
    for r in rows:
        assert r.best_loss_smoothed <= r.final_loss_smoothed + 1e-12
        assert r.min_loss_raw <= r.final_loss_raw


def test_models_cli(engine, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TRAINSRV_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    config.set_settings(None)
    try:
        assert cli.main(["models", "list", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert {r["model_kind"] for r in listed} == {"cnn", "rl"} and any(r["is_deployed"] for r in listed)
        assert cli.main(["models", "list", "--kind", "rl"]) == 0
        assert "rl-s" in capsys.readouterr().out
        deployed = next(r for r in listed if r["is_deployed"] and r["model_kind"] == "cnn")
        assert cli.main(["models", "show", str(deployed["session_id"])]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["lineage"][0]["session_id"] == deployed["session_id"] and shown["decisions"]
        assert cli.main(["models", "export", "--deployed", "cnn", SYMBOL, "--out", str(tmp_path / "x")]) == 0
        assert (tmp_path / "x" / "spec.json").exists()
        assert cli.main(["models", "rollback", "cnn", "NOPE"]) == 1
        assert cli.main(["models", "live", "--kind", "cnn"]) == 0
    finally:
        config.set_settings(None)


def test_listing_models_needs_no_torch():
    code = "import sys, app.registry.commands, app.registry.store, app.registry.jobs; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_orchestrator_role_reads_the_deployed_model_and_nothing_else(engine):
    def as_orchestrator(sql: str):
        with engine.connect() as conn:
            conn.execute(sa.text("SET ROLE trainsrv_orchestrator"))
            try:
                return conn.execute(sa.text(sql), {"s": SYMBOL}).all()
            finally:
                conn.rollback()

    with engine.connect() as conn:
        deployed = store.deployed(conn, "cnn", SYMBOL)
    assert as_orchestrator("SELECT deployed_version('cnn', :s)") == [(deployed.version,)]
    rows = as_orchestrator("SELECT session_id, version, octet_length(state) > 0 FROM deployed_model('cnn', :s)")
    assert rows == [(deployed.session_id, deployed.version, True)]
    assert as_orchestrator("SELECT * FROM deployed_model('cnn', 'NOPE')") == []
    for sql in ("SELECT * FROM v_models", "SELECT * FROM model_deployments", "SELECT * FROM checkpoints"):
        with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
            as_orchestrator(sql)


def test_analysts_read_the_registry_views(engine):
    with engine.connect() as conn:
        conn.execute(sa.text("SET ROLE trainsrv_analyst"))
        for view in (
            "v_models",
            "v_deployed_models",
            "v_model_lineage",
            "v_model_live_performance",
            "v_rl_episodes",
            "v_session_value",
        ):
            conn.execute(sa.text(f"SELECT * FROM {view} LIMIT 1")).all()
        conn.rollback()
