"""One `trainsrv demo` run per test session, shared by every module that reads what it left behind."""

import json

import pytest

from app.db.embedded import EmbeddedServer
from tests.e2e import cli
from tests.embedded_dirs import reachable


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    data_dir = reachable(tmp_path_factory.mktemp("demo")) / "data"
    env = {"TRAINSRV_DATA_DIR": str(data_dir)}
    result = cli.run("demo", "--days", "2", "--rl-steps", "40", "--cnn-epochs", "4", "--json", env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    yield env, json.loads(result.stdout), data_dir
    server = EmbeddedServer(data_dir)
    server.stop()
