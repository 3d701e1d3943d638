"""trainsrv sessions list | show | compare, as a user runs them (table and --json)."""

import json

import pytest
import sqlalchemy as sa

from app.analysts import sessions
from tests.e2e import cli

SESSION = sa.text(
    "INSERT INTO training_sessions (model_kind, model_name, seed, torch_version, trainsrv_version, device, "
    "capture_policy, replay_exact, metrics, config, training_value) VALUES (:kind, 'm', 1, 't', 'v', 'cpu', 'full', "
    "true, :metrics, :config, :value) RETURNING id"
)


@pytest.fixture
def three(engine):
    made = []
    with engine.begin() as conn:
        for kind, lr, value, evaluation in [
            (
                "cnn",
                0.001,
                0.7,
                {
                    "accuracy": 0.6,
                    "baseline_accuracy": 0.5,
                    "total_profit": 0.02,
                    "calls": 10,
                    "mean_profit_per_call": 0.002,
                },
            ),
            ("cnn", 0.01, 0.4, {"accuracy": 0.4, "baseline_accuracy": 0.5, "total_profit": -0.01}),
            ("rl", 0.001, 0.6, {}),
        ]:
            config = {"symbol": "BTC-PERP", "optimizer": {"lr": lr}, "episode_ids": list(range(100))}
            made.append(
                conn.execute(
                    SESSION,
                    {
                        "kind": kind,
                        "metrics": json.dumps({"evaluation": evaluation}),
                        "config": json.dumps(config),
                        "value": value,
                    },
                ).scalar()
            )
    return made


def test_list_is_newest_first_and_filters(db_url, three):
    rows = json.loads(cli.run("sessions", "list", "--json", env={"TRAINSRV_DATABASE_URL": db_url}, check=True).stdout)
    assert [r["session_id"] for r in rows] == three[::-1]
    cnn = json.loads(
        cli.run("sessions", "list", "--kind", "cnn", "--json", env={"TRAINSRV_DATABASE_URL": db_url}, check=True).stdout
    )
    assert [r["session_id"] for r in cnn] == three[1::-1]
    assert cnn[-1]["beats_baseline"] is True and cnn[0]["beats_baseline"] is False
    table = cli.run("sessions", "list", "--limit", "2", env={"TRAINSRV_DATABASE_URL": db_url}, check=True).stdout
    lines = table.strip().splitlines()
    assert lines[0].split()[:3] == ["id", "kind", "symbol"] and len(lines) == 3
    assert "BTC-PERP" in lines[1]


def test_show_and_an_unknown_session(db_url, three):
    env = {"TRAINSRV_DATABASE_URL": db_url}
    shown = json.loads(cli.run("sessions", "show", str(three[0]), "--json", env=env, check=True).stdout)
    assert shown["eval_accuracy"] == 0.6 and shown["symbol"] == "BTC-PERP"
    text = cli.run("sessions", "show", str(three[0]), env=env, check=True).stdout
    assert "optimizer.lr" in text and "100 values" in text
    missing = cli.run("sessions", "show", "99999", env=env)
    assert missing.returncode == 1 and missing.stderr.strip() == "trainsrv: error: no training session 99999"


def test_compare_lists_the_configuration_that_differs(db_url, three):
    env = {"TRAINSRV_DATABASE_URL": db_url}
    out = json.loads(cli.run("sessions", "compare", str(three[0]), str(three[1]), "--json", env=env, check=True).stdout)
    assert [s["session_id"] for s in out["sessions"]] == three[:2]
    assert out["config_differences"] == {"optimizer.lr": [0.001, 0.01]}
    text = cli.run("sessions", "compare", *map(str, three), env=env, check=True).stdout
    assert "configuration differences" in text and "training_value" in text
    same = cli.run("sessions", "compare", str(three[0]), str(three[0]), env=env)
    assert same.returncode == 1


def test_config_differences_ignore_equal_keys():
    a = {"config": {"x": 1, "y": {"z": [1, 2]}}}
    b = {"config": {"x": 1, "y": {"z": [1, 3]}, "w": True}}
    assert sessions.config_differences([a, b]) == {"w": [None, True], "y.z": [[1, 2], [1, 3]]}
