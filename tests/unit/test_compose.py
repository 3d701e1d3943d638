"""docker-compose.yml is valid and wires the services as ops expect (no Docker engine needed)."""

import shutil
import subprocess

import pytest
import yaml

from app.paths import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"


def test_compose_file_validates_with_docker_compose():
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (.ci/run installs it)")
    env = {"POSTGRES_PASSWORD": "secret", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([exe, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    missing = subprocess.run([exe, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin"})
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr


def test_services_are_wired_by_url_with_health_and_storage():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"db", "migrate", "trainer"} <= set(services)
    db = services["db"]
    assert "pgvector" in db["image"] and "pg18" in db["image"]
    assert "healthcheck" in db and db["shm_size"]
    assert any(v.startswith("pgdata:") for v in db["volumes"])
    assert services["migrate"]["command"] == ["trainsrv", "db", "upgrade"]
    assert services["trainer"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    for name in ("migrate", "trainer"):
        assert services[name]["environment"]["TRAINSRV_DATABASE_URL"].startswith("postgresql://")
