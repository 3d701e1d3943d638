"""The streaming orchestrator: candles are released as the accelerated clock passes them, and
every decision's package sees only bars that had closed by then."""

import datetime as dt

import sqlalchemy as sa

from app.demo import stream


def test_streams_two_symbols_without_look_ahead(engine):
    spec = stream.StreamSpec(
        symbols=("SIM-A", "SIM-B"), hours=0.5, speed=3600.0, every_min=10, horizon_s=600, tick_s=0.05
    )
    seen = []

    def source(package, package_id):
        with engine.connect() as conn:
            newest = conn.execute(
                sa.text("SELECT max(ts) FROM candles WHERE symbol = :s"), {"s": package.symbol}
            ).scalar()
        seen.append((package.ts, newest))
        return stream.rule_models(horizon_s=600)(package, package_id)

    counts = stream.run(engine, spec, source)
    assert counts["decisions"] == 4 and counts["packages"] == 8
    with engine.connect() as conn:
        per_symbol = dict(
            conn.execute(
                sa.text(
                    "SELECT ip.symbol, count(*) FROM predictions p JOIN input_packages ip ON ip.id = p.package_id "
                    "GROUP BY ip.symbol"
                )
            ).all()
        )
        last_bar = conn.execute(sa.text("SELECT max(ts) FROM candles WHERE symbol = 'SIM-A'")).scalar()
    assert set(per_symbol) == {"SIM-A", "SIM-B"} and counts["predictions"] == sum(per_symbol.values())
    # When a package was built, the newest bar released had closed by its time: the market is never
    # ahead of a decision, however slow the machine (a bar is released when it closes).
    assert all(newest + dt.timedelta(minutes=1) == ts for ts, newest in seen)
    assert last_bar >= spec.stream_end + dt.timedelta(seconds=spec.horizon_s) - dt.timedelta(minutes=1)
