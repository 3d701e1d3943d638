"""Duplicate deliveries (the same work sent again, concurrently) and clock skew between the
orchestrator and the database server (the server's clock is the one that decides)."""

from __future__ import annotations

import datetime as dt
import random
import threading

import numpy as np
import pytest
import sqlalchemy as sa

from app.client import Client, Prediction
from app.config import Settings
from app.errors import ValidationError
from app.ingest.builder import package_from_candles
from app.ingest.candles import ingest_candles
from app.ingest.package import ModelInputPackage
from app.jobs import queue
from tests.reliability.support import scalar

UTC = dt.UTC


def _concurrently(workers: int, work) -> list:
    results, errors = [None] * workers, []

    def run(i):
        try:
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    return results


@pytest.fixture
def packages(engine, real_candles_path):
    ingest_candles(engine, real_candles_path, "BTC-PERP", "1m", progress=False)
    start = dt.datetime(2022, 1, 5, tzinfo=UTC)
    with engine.connect() as conn:
        return [package_from_candles(conn, "BTC-PERP", start + dt.timedelta(minutes=15 * i)) for i in range(25)]


def test_the_same_records_delivered_by_four_orchestrators_at_once_are_stored_once(engine, db_url, packages):
    prediction = Prediction("cnn", "v7", "short", 0.55, 600)

    def deliver(worker: int) -> dict:
        order = list(range(len(packages)))
        random.Random(worker).shuffle(order)
        with Client(db_url) as client:
            return {i: client.record(packages[i], prediction) for i in order}

    results = _concurrently(4, deliver)
    assert all(r == results[0] for r in results)  # every delivery got the same ids back
    assert scalar(engine, "SELECT count(*) FROM input_packages") == len(packages)
    assert scalar(engine, "SELECT count(*) FROM predictions") == len(packages)


def test_the_same_bulk_load_twice_at_once_is_stored_once(engine, db_url, packages):
    def load(_):
        with Client(db_url) as client:
            return [r.package_id for r in client.insert_packages(packages, batch_size=7)]

    first, second = _concurrently(2, load)
    assert first == second and scalar(engine, "SELECT count(*) FROM input_packages") == len(packages)


def test_the_same_candle_file_loaded_twice_at_once_is_stored_once(engine, real_candles_path):
    reports = _concurrently(2, lambda _: ingest_candles(engine, real_candles_path, "DUP", "1m", progress=False))
    total = scalar(engine, "SELECT count(*) FROM candles WHERE symbol = 'DUP'")
    assert sorted(r.loaded for r in reports) == [0, total] and total == reports[0].rows_read


def test_a_job_enqueued_by_many_at_once_with_one_dedupe_key_is_queued_once(engine):
    def enqueue(_):
        with engine.begin() as conn:
            return queue.enqueue(conn, "noop", {}, dedupe_key="nightly-verify").id

    ids = _concurrently(6, enqueue)
    assert len(set(ids)) == 1 and scalar(engine, "SELECT count(*) FROM jobs") == 1


# -- clock skew ---------------------------------------------------------------------------------


def _server_now(engine) -> dt.datetime:
    return scalar(engine, "SELECT now()")


def _package_at(ts: dt.datetime) -> ModelInputPackage:
    """A small clean package whose 30 one-minute bars all closed by ``ts``."""
    end = int(ts.timestamp()) // 60 * 60
    times = np.arange(end - 30 * 60, end, 60, dtype=np.int64)
    close = 100 + np.cumsum(np.full(30, 0.1))
    bars = np.column_stack([close - 0.05, close + 0.2, close - 0.2, close, np.full(30, 5.0)])
    return ModelInputPackage(symbol="SKEW", ts=ts, ohlcv={"1m": bars}, bar_ts={"1m": times})


@pytest.fixture
def client(db_url):
    with Client(db_url, settings=Settings(package_required_fields="ohlcv.1m", max_clock_skew_s=5.0)) as c:
        yield c


@pytest.mark.parametrize("skew_s", [-3600.0, -2.0, 0.0, 3.0])
def test_an_orchestrator_clock_within_the_allowed_skew_is_accepted(engine, client, skew_s):
    at = _server_now(engine) + dt.timedelta(seconds=skew_s)
    result = client.insert_package(_package_at(at))
    assert result.validation_flags["timestamp_not_future"] and result.is_valid, result.failed_checks
    assert client.insert_prediction(Prediction("rl", "v1", "hold", 0.3, 60, predicted_at=at), result.package_id)


@pytest.mark.parametrize("skew_s", [30.0, 3600.0])
def test_an_orchestrator_clock_ahead_of_the_server_is_caught(engine, client, skew_s):
    at = _server_now(engine) + dt.timedelta(seconds=skew_s)
    result = client.insert_package(_package_at(at))
    assert not result.is_valid and result.failed_checks == ["timestamp_not_future"]  # stored, flagged, never trained
    with pytest.raises(ValidationError) as err:
        client.insert_prediction(Prediction("rl", "v1", "hold", 0.3, 60, predicted_at=at), result.package_id)
    assert err.value.field == "predicted_at"
    assert scalar(engine, "SELECT count(*) FROM predictions") == 0


def test_job_times_come_from_the_server_clock(engine):
    with engine.begin() as conn:
        job = queue.enqueue(conn, "noop", {}, delay_s=120)
        lag = conn.execute(
            sa.text("SELECT extract(epoch FROM run_after - now()) FROM jobs WHERE id = :j"), {"j": job.id}
        ).scalar()
    assert 119 <= lag <= 121  # the same transaction: only the server's clock was read
