"""Scheduling from the settings: periodic validation jobs and threshold-triggered training, once each."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import sqlalchemy as sa

from app.jobs import queue, registry
from app.jobs.scheduler import Scheduler

SCHEDULED_KINDS = ("validate_outcomes", "detect_events", "train_cnn", "train_rl", "gc")


def _stand_in(kind: str, **params: registry.Param) -> registry.Handler:
    return registry.Handler(kind, lambda ctx, p: {}, params)


@pytest.fixture
def stand_ins(monkeypatch):
    """Scheduled kinds with known parameters: train_cnn per symbol, train_rl over all symbols."""
    handlers = {
        "validate_outcomes": _stand_in("validate_outcomes"),
        "detect_events": _stand_in("detect_events"),
        "train_cnn": _stand_in("train_cnn", symbol=registry.Param(str),
                               min_profitability=registry.Param(float, default=0.7)),
        "train_rl": _stand_in("train_rl"),
    }
    monkeypatch.setattr(registry, "load_handlers", lambda settings=None: handlers)
    monkeypatch.setattr(registry, "_handlers", handlers)  # what registry.get() looks up first
    return handlers


@pytest.fixture
def thresholds(settings):
    return dataclasses.replace(settings, enable_background_validation=False, min_episodes_for_cnn_training=3,
                               min_profitability_for_replay=0.5, min_experiences_for_rl_training=2, gc_interval_s=0)


_counter = iter(range(1, 10**6))


def _episode(conn, profitability: float, valid: bool = True, symbol: str = "BTC-PERP") -> int:
    """A package, a prediction from it and its validated outcome; returns the package id."""
    n = next(_counter)
    package = conn.execute(sa.text(
        "INSERT INTO input_packages (symbol, ts, payload, payload_format, data_hash, completeness_score, is_valid) "
        "VALUES (:symbol, now(), '\\x00', 'test', :hash, 1.0, :valid) RETURNING id"),
        {"hash": hashlib.sha256(str(n).encode()).digest(), "valid": valid, "symbol": symbol}).scalar()
    prediction = conn.execute(sa.text(
        "INSERT INTO predictions (prediction_key, package_id, model_kind, model_version, action, confidence, "
        "horizon_s, predicted_at) VALUES (:key, :pkg, 'cnn', 'v1', 'long', 0.7, 60, now() - interval '1 hour') "
        "RETURNING id"), {"key": f"p{n}", "pkg": package}).scalar()
    conn.execute(sa.text(
        "INSERT INTO outcomes (prediction_id, status, actual_profit, profitability_score, optimal_action, "
        "is_profitable, validated_at) VALUES (:p, 'validated', 0.01, :score, 'long', true, now())"),
        {"p": prediction, "score": profitability})
    return package


def _experience(conn, package: int, symbol: str = "BTC-PERP") -> None:
    conn.execute(sa.text(
        "INSERT INTO experiences (symbol, state_package_id, action, reward, done, is_profitable, priority) "
        "VALUES (:symbol, :pkg, 'long', 0.5, false, true, 1.0)"), {"pkg": package, "symbol": symbol})


def _jobs(engine, kind) -> list[dict]:
    with engine.connect() as conn:
        return queue.list_jobs(conn, kind=kind)


def _tick(engine, scheduler) -> list[int]:
    with engine.begin() as conn:
        return scheduler.tick(conn)


def test_training_is_enqueued_once_per_threshold_crossing(engine, thresholds, stand_ins):
    scheduler = Scheduler(thresholds)
    with engine.begin() as conn:
        packages = [_episode(conn, 0.9), _episode(conn, 0.5)]
        _episode(conn, 0.2)  # below min_profitability_for_replay
        _episode(conn, 0.9, valid=False)  # invalid package: never a replay episode
        _episode(conn, 0.9, symbol="ETH-PERP")
        _experience(conn, packages[0])
    assert _tick(engine, scheduler) == []

    with engine.begin() as conn:
        _episode(conn, 0.7)
        _experience(conn, packages[1], symbol="ETH-PERP")  # RL counts over all symbols here
    assert len(_tick(engine, scheduler)) == 2
    [cnn], [rl] = _jobs(engine, "train_cnn"), _jobs(engine, "train_rl")
    assert cnn["dedupe_key"] == "auto:train_cnn:BTC-PERP:1" and rl["dedupe_key"] == "auto:train_rl:1"
    with engine.connect() as conn:
        assert queue.get(conn, cnn["id"])["params"] == {"symbol": "BTC-PERP", "min_profitability": 0.5}
        assert queue.get(conn, rl["id"])["params"] == {}

    # Later ticks, by this trainer or another one, and after the job finished: nothing new.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET state = 'succeeded', locked_by = 'w', finished_at = now()"))
    assert _tick(engine, scheduler) == [] and _tick(engine, Scheduler(thresholds)) == []

    with engine.begin() as conn:
        for _ in range(3):
            _episode(conn, 0.8)
        for _ in range(2):
            _episode(conn, 0.8, symbol="ETH-PERP")
    assert len(_tick(engine, scheduler)) == 2
    assert sorted(j["dedupe_key"] for j in _jobs(engine, "train_cnn")) == [
        "auto:train_cnn:BTC-PERP:1", "auto:train_cnn:BTC-PERP:2", "auto:train_cnn:ETH-PERP:1"]
    assert len(_jobs(engine, "train_rl")) == 1


def test_background_validation_runs_once_per_interval_window(engine, settings, stand_ins):
    on = dataclasses.replace(settings, enable_background_validation=True, validation_interval_s=3600.0,
                             min_episodes_for_cnn_training=0, min_experiences_for_rl_training=0)
    trainers = [Scheduler(on), Scheduler(on)]
    created = [job for s in trainers for job in _tick(engine, s)] + _tick(engine, trainers[0])
    kinds = sorted(j["kind"] for j in _jobs(engine, None))
    assert kinds == ["detect_events", "validate_outcomes"] and len(created) == 2
    assert all(j["dedupe_key"].startswith(f"auto:{j['kind']}:") for j in _jobs(engine, None))

    off = dataclasses.replace(on, enable_background_validation=False)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM jobs"))
    assert _tick(engine, Scheduler(off)) == []


def test_kinds_it_cannot_enqueue_are_skipped(engine, thresholds, stand_ins, caplog):
    del stand_ins["train_cnn"]  # not registered in this trainer
    stand_ins["train_rl"] = _stand_in("train_rl", epochs=registry.Param(int))  # needs a value it lacks
    with engine.begin() as conn:
        packages = [_episode(conn, 0.9) for _ in range(3)]
        for package in packages:
            _experience(conn, package)
    scheduler = Scheduler(thresholds)
    with caplog.at_level("INFO", logger="app.jobs.scheduler"):
        assert _tick(engine, scheduler) == [] and _tick(engine, scheduler) == []
    assert _jobs(engine, None) == []
    skips = [r.getMessage() for r in caplog.records if r.name == "app.jobs.scheduler"]
    assert len(skips) == 1 and "train_rl" in skips[0] and "epochs: is required" in skips[0]


def test_every_registered_scheduled_kind_accepts_what_the_scheduler_gives(engine, settings):
    # The real handlers of this checkout (other areas add them): each scheduled kind that is
    # registered must be enqueueable by the scheduler, or automatic work silently never happens.
    registered = [k for k in SCHEDULED_KINDS if k in registry.load_handlers()]
    eager = dataclasses.replace(settings, enable_background_validation=True, min_episodes_for_cnn_training=1,
                                min_experiences_for_rl_training=1, min_profitability_for_replay=0.1)
    with engine.begin() as conn:
        _experience(conn, _episode(conn, 0.9))
    _tick(engine, Scheduler(eager))
    assert sorted({j["kind"] for j in _jobs(engine, None)}) == sorted(registered)
