"""The database commands as ops use them, including the expected failures."""

import json

from tests.e2e import cli
from tests.embedded_dirs import reachable


def test_fresh_data_dir_upgrade_then_stats(tmp_path):
    env = {"TRAINSRV_DATA_DIR": str(reachable(tmp_path) / "data")}
    cli.run("db", "upgrade", env=env, check=True)
    stats = json.loads(cli.run("stats", "--json", env=env, check=True).stdout)
    assert {t["table_name"] for t in stats["tables"]} >= {"candles", "jobs", "gradient_blobs"}
    assert all(t["row_count"] == 0 for t in stats["tables"])
    check = cli.run("db", "check", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "head" in cli.run("db", "current", env=env, check=True).stdout


def _one_line_error(result):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("trainsrv: error:") and "Traceback" not in result.stderr
    return lines[0]


def test_malformed_url_is_a_one_line_error():
    line = _one_line_error(cli.run("stats", env={"TRAINSRV_DATABASE_URL": "not a url"}))
    assert "TRAINSRV_DATABASE_URL" in line


def test_unreachable_server_is_a_one_line_error_without_password():
    url = "postgresql://ops:hunter2@127.0.0.1:9/trainsrv"
    line = _one_line_error(cli.run("stats", env={"TRAINSRV_DATABASE_URL": url, "TRAINSRV_DB_CONNECT_TIMEOUT_S": "2"}))
    assert "cannot connect" in line and "hunter2" not in line


def test_database_behind_head_is_refused(empty_db_url):
    env = {"TRAINSRV_DATABASE_URL": empty_db_url}
    line = _one_line_error(cli.run("stats", env=env))
    assert "trainsrv db upgrade" in line
    assert cli.run("db", "check", env=env).returncode != 0
    cli.run("db", "upgrade", "0001", env=env, check=True)
    cli.run("db", "downgrade", "base", env=env, check=True)
    assert "base" in cli.run("db", "current", env=env, check=True).stdout


def test_bad_setting_is_a_one_line_error():
    line = _one_line_error(cli.run("stats", env={"TRAINSRV_DB_CONNECT_TIMEOUT_S": "soon"}))
    assert "TRAINSRV_DB_CONNECT_TIMEOUT_S" in line
