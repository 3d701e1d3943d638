"""``trainsrv jobs ...`` and ``trainsrv serve`` driven as ops would, in subprocesses."""

from __future__ import annotations

import json

import sqlalchemy as sa

from app.jobs import queue
from tests.e2e import cli
from tests.jobs.conftest import scalar


def _one_line_error(result) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trainsrv: error:") and "Traceback" not in result.stderr, (
        result.stderr
    )
    return lines[0]


def test_enqueue_list_show_cancel_retry(fast_env, engine):
    out = cli.run(
        "jobs",
        "enqueue",
        "noop",
        "--param",
        "sleep_s=0.5",
        "--priority",
        "3",
        "--dedupe-key",
        "smoke",
        env=fast_env,
        check=True,
    ).stdout
    job_id = int(out.split()[2])
    assert out.strip() == f"queued job {job_id} (noop)"
    again = cli.run("jobs", "enqueue", "noop", "--dedupe-key", "smoke", env=fast_env, check=True).stdout
    assert f"job {job_id} with dedupe key 'smoke' is already queued" in again

    listing = cli.run("jobs", "list", env=fast_env, check=True).stdout
    assert f"{job_id}" in listing and "noop" in listing and "depth: queued 1 (ready 1)" in listing
    shown = json.loads(cli.run("jobs", "show", str(job_id), env=fast_env, check=True).stdout)
    assert shown["params"] == {"sleep_s": 0.5} and shown["priority"] == 3

    assert cli.run("jobs", "cancel", str(job_id), env=fast_env, check=True).stdout.strip() == f"cancelled job {job_id}"
    assert "only queued or running" in _one_line_error(cli.run("jobs", "cancel", str(job_id), env=fast_env))
    cli.run("jobs", "retry", str(job_id), env=fast_env, check=True)
    assert scalar(engine, "SELECT state FROM jobs WHERE id = :id", id=job_id) == "queued"
    kinds = cli.run("jobs", "kinds", env=fast_env, check=True).stdout
    assert "noop: sleep_s (float, default 0.0)" in kinds and "test_flaky: fail_times (int, required)" in kinds


def test_enqueue_refuses_bad_jobs_before_touching_the_queue(fast_env, engine):
    # (Every parameter rule is covered in-process in test_queue; here: the CLI's own paths.)
    cases = [
        (("nope",), "kind: unknown job kind 'nope'"),
        (("noop", "--param", "sleep_s=later"), "sleep_s: must be a number"),
        (("noop", "--param", "sleep_s"), "--param: must look like NAME=VALUE"),
    ]
    for args, message in cases:
        assert message in _one_line_error(cli.run("jobs", "enqueue", *args, env=fast_env))
    assert scalar(engine, "SELECT count(*) FROM jobs") == 0


def _enqueue(engine, kind, params=None, **kwargs) -> int:
    with engine.begin() as conn:
        return queue.enqueue(conn, kind, params, **kwargs).id


def test_serve_once_runs_ready_jobs_and_logs_json_lines(fast_env, engine):
    for _ in range(3):
        _enqueue(engine, "noop")
    _enqueue(engine, "test_flaky", {"fail_times": 9}, max_attempts=1)
    result = cli.run("serve", "--once", "--no-schedule", env=fast_env, check=True)
    events = [json.loads(line) for line in result.stdout.splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "worker.started" and names[-1] == "worker.stopped"
    assert names.count("job.started") == 4 and names.count("job.succeeded") == 3 and names.count("job.failed") == 1
    failed = next(e for e in events if e["event"] == "job.failed")
    assert failed["error"] == "RuntimeError: flaky failure on attempt 1"
    with engine.connect() as conn:
        states = dict(conn.execute(sa.text("SELECT state, count(*) FROM jobs GROUP BY state")).all())
    assert states == {"succeeded": 3, "failed": 1}


def test_serve_max_jobs_stops_after_n(fast_env, engine):
    for _ in range(3):
        _enqueue(engine, "noop")
    cli.run("serve", "--max-jobs", "2", "--no-schedule", env=fast_env, check=True)
    assert scalar(engine, "SELECT count(*) FROM jobs WHERE state = 'queued'") == 1


def test_serve_refuses_a_database_behind_head(empty_db_url):
    line = _one_line_error(cli.run("serve", "--once", env={"TRAINSRV_DATABASE_URL": empty_db_url}))
    assert "trainsrv db upgrade" in line


def test_serve_refuses_a_handler_module_that_cannot_be_imported(fast_env):
    env = {**fast_env, "TRAINSRV_HANDLER_MODULES": "no_such_package.jobs"}
    line = _one_line_error(cli.run("serve", "--once", env=env))
    assert "job handler module 'no_such_package.jobs' cannot be imported" in line
