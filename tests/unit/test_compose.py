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
    env = {
        "POSTGRES_PASSWORD": "secret",
        "TRAINSRV_OWNER_PASSWORD": "o",
        "TRAINSRV_WORKER_PASSWORD": "w",
        "TRAINSRV_READER_PASSWORD": "r",
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run([exe, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(
        [exe, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
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


def test_services_connect_with_least_privilege_logins():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert "trainsrv_owner:" in services["migrate"]["environment"]["TRAINSRV_DATABASE_URL"]
    assert "trainsrv_worker:" in services["trainer"]["environment"]["TRAINSRV_DATABASE_URL"]
    assert "./deploy/initdb:/docker-entrypoint-initdb.d:ro" in services["db"]["volumes"]
    assert (REPO_ROOT / "deploy" / "initdb" / "10-trainsrv-roles.sh").stat().st_mode & 0o111


def test_analyst_port_on_localhost_and_a_trainer_healthcheck():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["db"]["ports"] == ["${TRAINSRV_DB_BIND:-127.0.0.1}:${TRAINSRV_DB_PORT:-5432}:5432"]
    trainer = services["trainer"]
    assert "--metrics-port" in trainer["command"] and "/health" in " ".join(trainer["healthcheck"]["test"])


def test_dockerfile_installs_the_cpu_torch_wheel_by_default():
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert '--index-url "$TORCH_INDEX_URL" "torch==' in text
