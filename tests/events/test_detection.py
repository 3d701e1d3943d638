"""Event detection finds the largest real moves in the shared candles and nothing in a flat series."""

import datetime as dt
import random

import pytest
import sqlalchemy as sa
from outcomes.support import SYMBOL, UTC, insert_candles, package_at, read_candles

from app.config import Settings
from app.db.engine import make_engine
from app.errors import ValidationError
from app.events.detect import detect_events, velocity_thresholds

SETTINGS = Settings()


@pytest.fixture(scope="module")
def real(module_db_url, real_candles_path):
    """All 45,031 real bars, detected once with the default settings."""
    eng = make_engine(module_db_url)
    rows = read_candles(real_candles_path)
    insert_candles(eng, rows)
    counts = detect_events(eng, SETTINGS)
    yield eng, rows, counts
    eng.dispose()


def _events(conn, kind=None):
    return (
        conn.execute(
            sa.text("SELECT * FROM market_events WHERE CAST(:k AS text) IS NULL OR kind = :k ORDER BY started_at"),
            {"k": kind},
        )
        .mappings()
        .all()
    )


def _largest_moves(rows, bars: int, count: int):
    """The ``count`` largest |close-to-close| moves over ``bars`` bars, at least an hour apart."""
    moves = sorted(
        ((abs(rows[i][4] / rows[i - bars][4] - 1), rows[i][0]) for i in range(bars, len(rows))), reverse=True
    )
    picked = []
    for size, ts in moves:
        if all(abs((ts - other).total_seconds()) > 3600 for _, other in picked):
            picked.append((size, ts))
        if len(picked) == count:
            return picked


def test_the_largest_real_moves_are_velocity_events(real):
    engine, rows, counts = real
    with engine.connect() as conn:
        events = _events(conn, "velocity")
    for size, ts in _largest_moves(rows, SETTINGS.velocity_window_min, 5):
        # ts is the open of the bar whose close ends the move; the event spans that close.
        assert any(e["started_at"] <= ts and ts + dt.timedelta(minutes=1) <= e["ended_at"] for e in events), (
            f"the {size:.2%} move ending in the bar at {ts} was not detected"
        )
    assert 0 < len(events) < 200  # rare, as "rapid" means


def test_the_largest_one_minute_moves_are_caught(real):
    engine, rows, _ = real
    with engine.connect() as conn:
        spikes, events = _events(conn, "volatility_spike"), _events(conn)
    largest = _largest_moves(rows, 1, 10)
    # The two largest (+1.96 % and -1.81 % on Jan 7) came out of a calm market: volatility spikes.
    for size, ts in largest[:2]:
        assert any(e["started_at"] <= ts < e["ended_at"] for e in spikes), f"{size:.2%} bar at {ts} missed"
    # In an already turbulent market (Jan 21) the adaptive baseline has risen, so a big bar is no
    # spike there, but it is still a rapid move: each of the ten largest is inside some event.
    for size, ts in largest:
        assert any(e["started_at"] <= ts < e["ended_at"] for e in events), f"{size:.2%} bar at {ts} missed"
    assert 0 < len(spikes) < 200


def test_detection_is_idempotent(real):
    engine, _, first = real
    with engine.connect() as conn:
        before = [dict(e) for e in _events(conn)]
    again = detect_events(engine, SETTINGS)
    assert (again["found"], again["inserted"], again["updated"], again["deleted"]) == (first["found"], 0, 0, 0)
    with engine.connect() as conn:
        assert [dict(e) for e in _events(conn)] == before


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_a_flat_series_has_no_events(engine, noise):
    rng = random.Random(3)
    start = dt.datetime(2022, 3, 1, tzinfo=UTC)
    rows = []
    for i in range(3000):
        price = 100.0 + rng.uniform(-noise, noise)  # at most +-0.5 %, no trend, no clustering
        rows.append((start + dt.timedelta(minutes=i), price, price + noise, price - noise, price, 10.0))
    insert_candles(engine, rows, symbol="FLAT")
    counts = detect_events(engine, SETTINGS)
    assert counts["found"] == 0
    with engine.connect() as conn:
        assert _events(conn) == []


@pytest.fixture
def jan7(engine, real_candles_path):
    """Jan 6 22:41 to Jan 8 08:00: the two largest one-minute moves of the month."""
    insert_candles(engine, read_candles(real_candles_path, 8500, 2000))
    return engine


def test_packages_inside_an_event_become_premium_once_it_is_known(jan7):
    """Premium from the close of the event's first flagged bar (known_at) on: a package captured earlier in
    the event's window could not have known about it (its mark would use later bars)."""
    detect_events(jan7, SETTINGS)
    with jan7.connect() as conn:
        ev = conn.execute(
            sa.text(
                "SELECT started_at, known_at, ended_at FROM market_events WHERE symbol = :s AND kind = 'velocity' "
                "ORDER BY magnitude DESC LIMIT 1"
            ),
            {"s": SYMBOL},
        ).one()
        conn.execute(sa.text("DELETE FROM market_events"))
        conn.commit()
    assert ev.started_at < ev.known_at <= ev.ended_at
    inside = package_at(jan7, ev.known_at)
    early = package_at(jan7, ev.known_at - dt.timedelta(seconds=30))
    calm = package_at(jan7, dt.datetime(2022, 1, 7, 3, 0, tzinfo=UTC))
    other = package_at(jan7, ev.known_at, symbol="ETH-PERP")
    detect_events(jan7, SETTINGS)
    with jan7.connect() as conn:
        premium = dict(conn.execute(sa.text("SELECT id, is_premium FROM input_packages")).all())
        # Half a minute earlier it is premium only if some other event was already known then.
        known_early = conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM market_events WHERE symbol = :s AND known_at <= :t AND ended_at >= :t)"
            ),
            {"s": SYMBOL, "t": ev.known_at - dt.timedelta(seconds=30)},
        ).scalar_one()
        assert conn.execute(sa.text("SELECT count(*) FROM v_leakage_audit")).scalar_one() == 0
    assert premium == {inside: True, early: known_early, calm: False, other: False}


def test_a_higher_threshold_for_the_symbol_removes_its_velocity_events(jan7):
    assert detect_events(jan7, SETTINGS)["velocity"] > 0
    strict = Settings(velocity_thresholds=f"{SYMBOL}=5.0,ETH-PERP=0.1")
    counts = detect_events(jan7, strict)
    assert counts["velocity"] == 0 and counts["deleted"] > 0
    with jan7.connect() as conn:
        assert _events(conn, "velocity") == []
        assert len(_events(conn, "volatility_spike")) == counts["volatility_spike"] > 0


def test_the_job_handler_detects_one_symbol(jan7):
    from app.jobs import registry

    handler = registry.get("detect_events")
    params = handler.validate({"symbol": SYMBOL})
    result = handler.fn(registry.JobContext(engine=jan7, settings=SETTINGS), params)
    assert result["found"] > 0 and result["inserted"] == result["found"]
    assert (
        handler.fn(registry.JobContext(engine=jan7, settings=SETTINGS), handler.validate({"symbol": "NONE"}))["found"]
        == 0
    )
    with jan7.connect() as conn:  # detecting another symbol leaves this one's events alone
        assert len(_events(conn)) == result["found"]


@pytest.mark.parametrize(
    "settings, field",
    [
        (Settings(velocity_thresholds="BTC-PERP=fast"), "velocity_thresholds"),
        (Settings(velocity_thresholds="=0.3"), "velocity_thresholds"),
        (Settings(velocity_window_min=0), "velocity_window_min"),
        (Settings(event_timeframe="7m", velocity_window_min=5, volatility_window_min=14), "velocity_window_min"),
        (Settings(volatility_ewma_alpha=0.0), "volatility_ewma_alpha"),
        (Settings(volatility_spike_multiplier=-1.0), "volatility_spike_multiplier"),
        (Settings(event_timeframe="1w"), "event_timeframe"),
    ],
)
def test_bad_settings_name_the_field(engine, settings, field):
    with pytest.raises(ValidationError) as err:
        detect_events(engine, settings)
    assert err.value.field == field


def test_thresholds_parse():
    assert velocity_thresholds(" BTC-PERP=0.3, ETH-PERP=0.45 ,") == (["BTC-PERP", "ETH-PERP"], [0.3, 0.45])
    assert velocity_thresholds("") == ([], [])
