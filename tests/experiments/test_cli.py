"""`trainsrv audit` and `trainsrv experiment` as a user runs them."""

from __future__ import annotations

import datetime as dt

import numpy as np
import sqlalchemy as sa

from app.demo import candle_episodes as ce
from app.demo import market
from app.ingest.candles import ingest_candles
from tests.e2e import cli


def test_audit_passes_on_a_clean_database_and_fails_naming_the_look_ahead(engine, db_url):
    env = {"TRAINSRV_DATABASE_URL": db_url}
    ok = cli.run("audit", env=env)
    assert ok.returncode == 0 and "0 row(s)" in ok.stdout
    cols = market.simulate(market.MarketSpec(minutes=200, start=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)))
    ingest_candles(engine, cols, ce.SYMBOL, "1m", progress=False)
    t = cols["timestamp"].astype("datetime64[s]").astype(np.int64)
    bars = np.stack([cols[k] for k in ("open", "high", "low", "close", "volume")], axis=1)
    with engine.begin() as conn:
        pkg = ce.package_at(t, bars, 150)
        pid = ce.insert_package(conn, pkg)
        ce.insert_prediction(conn, pid, pkg.ts - dt.timedelta(minutes=5), "long", 900)
    bad = cli.run("audit", env=env)
    assert bad.returncode == 1
    assert "package_after_prediction" in bad.stdout and "1 row(s)" in bad.stdout


def test_experiment_refuses_bad_input_with_one_line(tmp_path, db_url):
    env = {"TRAINSRV_DATABASE_URL": db_url}
    thirty = tmp_path / "btc-30m.csv"
    start = dt.datetime(2022, 1, 1)
    thirty.write_text(
        "timestamp,open,high,low,close,volume\n"
        + "".join(f"{(start + dt.timedelta(minutes=30 * i)).isoformat()},1,2,0.5,1.5,10\n" for i in range(3000))
    )
    r = cli.run("experiment", "walk-forward", "--candles", str(thirty), env=env)
    assert r.returncode != 0 and "1800 s apart" in r.stderr
    r = cli.run("experiment", "walk-forward", "--simulated", "--cnn-arms", "best", env=env)
    assert r.returncode != 0 and "unknown arms" in r.stderr
    with sa.create_engine(db_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM experiments")).scalar_one() == 0
