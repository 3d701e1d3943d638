"""trainsrv serve --metrics-port: Prometheus metrics and a health check from the running trainer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from app import metrics
from app.jobs import queue
from tests.jobs.conftest import wait_for


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _port(worker) -> int:
    def listening():
        if not worker.log_path.exists():
            return None
        return next((e["port"] for e in worker.events() if e["event"] == "metrics.listening"), None)

    return wait_for(listening, what="the metrics server")


def test_metrics_and_health_of_a_running_trainer(jobs_engine, workers):
    with jobs_engine.begin() as conn:
        done = queue.enqueue(conn, "noop", {"sleep_s": 0.2}).id
        queue.enqueue(conn, "noop", {}, delay_s=3600)  # stays queued: the queue depth shows it
    worker = workers("--metrics-port", "0")
    port = _port(worker)
    wait_for(
        lambda: any(e["event"] == "job.succeeded" and e["job_id"] == done for e in worker.events()), what="the noop job"
    )
    status, body = _get(port, "/metrics")
    assert status == 200
    assert 'trainsrv_jobs{kind="noop",state="queued"} 1' in body
    assert 'trainsrv_jobs{kind="noop",state="succeeded"} 1' in body
    assert 'trainsrv_jobs_finished_total{kind="noop",outcome="succeeded"} 1' in body
    assert 'trainsrv_job_duration_seconds_count{kind="noop",outcome="succeeded"} 1' in body
    assert "trainsrv_validation_lag_seconds 0" in body and "trainsrv_up 1" in body
    assert "# TYPE trainsrv_job_duration_seconds histogram" in body
    status, body = _get(port, "/health")
    assert status == 200 and json.loads(body) == {"status": "ok", "database": "ok"}
    assert _get(port, "/nothing")[0] == 404


def test_render_reports_steps_bytes_and_a_database_outage():
    metrics.training_step()
    metrics.inc("trainsrv_gradient_bytes_written_total", 1024)

    def down():
        raise OSError("connection refused")

    body = metrics.render(down)
    assert "trainsrv_up 0" in body and "trainsrv_training_steps_total" in body
    assert "trainsrv_gradient_bytes_written_total" in body and "trainsrv_training_steps_per_second" in body
    for line in body.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


@pytest.mark.parametrize("value,expected", [('a"b', 'a\\"b'), ("a\\b", "a\\\\b")])
def test_label_values_are_escaped(value, expected):
    assert metrics._labels((("kind", value),)) == '{kind="' + expected + '"}'
