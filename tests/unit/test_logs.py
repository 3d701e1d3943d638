"""Logging as ops configure it: TRAINSRV_LOG_LEVEL, one format per stream, progress lines every N steps."""

import json
import logging
import os
import subprocess
import sys
import types

import pytest

from app import config, progress_log

SNIPPET = (
    "from app import logs; logs.configure(); import logging; log = logging.getLogger('app.x'); "
    "log.debug('dbg'); log.info('hello'); log.warning('careful'); logging.getLogger('urllib3').info('lib')"
)


def _run(**env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TRAINSRV_")}
    full.update(env)
    return subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, env=full, timeout=60)


def test_the_level_comes_from_the_environment():
    default = _run().stderr
    assert "hello" in default and "careful" in default and "dbg" not in default and "lib" not in default
    quiet = _run(TRAINSRV_LOG_LEVEL="warning").stderr
    assert "hello" not in quiet and "careful" in quiet
    assert "dbg" in _run(TRAINSRV_LOG_LEVEL="DEBUG").stderr


def test_a_bad_level_is_refused():
    result = _run(TRAINSRV_LOG_LEVEL="LOUD")
    assert result.returncode != 0 and "TRAINSRV_LOG_LEVEL='LOUD'" in result.stderr


def test_json_format_is_one_object_per_line():
    lines = _run(TRAINSRV_LOG_FORMAT="json").stderr.strip().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [
        ("INFO", "app.x", "hello"),
        ("WARNING", "app.x", "careful"),
    ]


def test_progress_is_logged_every_n_steps(monkeypatch, caplog):
    monkeypatch.setenv("TRAINSRV_LOG_EVERY_STEPS", "5")
    config.set_settings(None)
    try:
        with caplog.at_level(logging.INFO, logger="app.training"):
            for step in range(1, 13):
                progress_log.step(
                    777, types.SimpleNamespace(step=step, loss_total=1.0 / step, grad_norm=0.5, learning_rate=1e-3)
                )
    finally:
        config.set_settings(None)
    lines = [r.getMessage() for r in caplog.records if r.name == "app.training"]
    assert [line.split(":")[0] for line in lines] == ["session 777 step 5", "session 777 step 10"]
    assert "loss 0.1" in lines[1] and "steps/s" in lines[1]


@pytest.mark.parametrize("stream_isatty,expected", [(True, True), (False, False)])
def test_progress_bars_only_on_a_terminal(stream_isatty, expected):
    from app import logs

    assert logs.show_progress(types.SimpleNamespace(isatty=lambda: stream_isatty)) is expected
