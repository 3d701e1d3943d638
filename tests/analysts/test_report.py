"""trainsrv report: valid PNG plots and an HTML page for a recorded session."""

import json

import matplotlib.image
import pytest
import sqlalchemy as sa

from app.analysts.report import write_report
from app.errors import TrainsrvError
from tests.e2e import cli


@pytest.fixture
def session_id(engine):
    with engine.begin() as conn:
        sid = conn.execute(
            sa.text(
                "INSERT INTO training_sessions (model_kind, model_name, seed, torch_version, trainsrv_version, device, "
                "capture_policy, replay_exact, metrics) VALUES ('cnn', 'app.nets.cnn:build', 1, '2', '0.1', 'cpu', "
                "'full', true, :m) RETURNING id"
            ),
            {"m": json.dumps({"evaluation": {"accuracy": 0.55, "mean_profit": 0.001, "n": 40}})},
        ).scalar()
        for step in range(20):
            conn.execute(
                sa.text(
                    "INSERT INTO training_steps (session_id, step, loss_total, loss_components, grad_norm, "
                    "learning_rate, batch_ids, batch_profitability) VALUES (:s, :step, :loss, :comp, :g, 0.001, "
                    "ARRAY[1,2]::bigint[], :bp)"
                ),
                {
                    "s": sid,
                    "step": step,
                    "loss": 2.0 / (step + 1),
                    "g": 1.0 + step,
                    "comp": json.dumps({"classification": 1.0 / (step + 1), "regression": 0.5 / (step + 1)}),
                    "bp": json.dumps({"mean_profit": 0.001 * step, "profitable_share": 0.5}),
                },
            )
    return sid


def test_report_writes_valid_images_and_page(engine, session_id, tmp_path):
    with engine.connect() as conn:
        index = write_report(conn, session_id, tmp_path / "r")
    names = {"losses.png", "grad_norm.png", "batch_profitability.png", "evaluation.png"}
    assert names <= {p.name for p in (tmp_path / "r").iterdir()}
    for name in names:
        image = matplotlib.image.imread(tmp_path / "r" / name)
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 0  # something was drawn
    page = index.read_text()
    assert all(f'src="{n}"' in page for n in names) and "Training session" in page


def test_report_of_unknown_session_is_a_clear_error(engine, tmp_path):
    with engine.connect() as conn, pytest.raises(TrainsrvError, match="does not exist"):
        write_report(conn, 999, tmp_path)


def test_report_cli(db_url, session_id, tmp_path):
    result = cli.run("report", str(session_id), "--out", str(tmp_path / "cli"), env={"TRAINSRV_DATABASE_URL": db_url})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cli" / "index.html").exists()


def test_report_page_is_a_summary_not_a_json_dump(engine, session_id, tmp_path):
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE training_sessions SET config = :c WHERE id = :s"),
            {
                "s": session_id,
                "c": json.dumps(
                    {"symbol": "BTC-PERP", "optimizer": {"lr": 0.001}, "train_episode_ids": list(range(500))}
                ),
            },
        )
        page = write_report(conn, session_id, tmp_path / "r").read_text()
    assert f"Training session {session_id} · cnn · BTC-PERP" in page
    assert "<th>optimizer.lr</th><td>0.001</td>" in page
    assert "500 values (0 … 499)" in page and "17, 18, 19" not in page
    assert "{" not in page.split("</style>")[1]  # no JSON anywhere in the body
    assert "accuracy</th><td>55.00 %" in page
