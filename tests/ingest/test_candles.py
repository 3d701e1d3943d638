"""Candle ingest: real file, idempotent re-ingest, overlap merge, gap report, each reject reason."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import sqlalchemy as sa

from app import cli
from app.errors import ValidationError
from app.ingest import ingest_candles

HEADER = "timestamp,open,high,low,close,volume\n"


def _count(engine, symbol):
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM candles WHERE symbol = :s"), {"s": symbol}).scalar()


def _csv(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return path


def _minute_rows(start, count, skip=()):
    base = dt.datetime(2022, 3, 1, tzinfo=dt.UTC)
    rows = []
    for i in range(start, start + count):
        if i in skip:
            continue
        ts = (base + dt.timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S.%f")
        rows.append(f"{ts},{100 + i},{102 + i},{99 + i},{101 + i},{10 + i}")
    return rows


def test_real_file_loads_once_and_reingest_is_idempotent(engine, real_candles_path):
    first = ingest_candles(engine, real_candles_path, "BTC-PERP", "1m", progress=False)
    assert (first.rows_read, first.loaded, first.duplicates, first.rejected) == (45031, 45031, 0, 0)
    assert first.gaps == []
    assert first.first_ts == dt.datetime(2021, 12, 31, 23, 1, tzinfo=dt.UTC)
    assert first.last_ts == dt.datetime(2022, 2, 1, 5, 31, tzinfo=dt.UTC)

    again = ingest_candles(engine, real_candles_path, "BTC-PERP", "1m", progress=False)
    assert (again.loaded, again.duplicates, again.conflicts, again.rejected) == (0, 45031, 0, 0)
    assert _count(engine, "BTC-PERP") == 45031
    with engine.connect() as conn:
        row = conn.execute(
            sa.text("SELECT open, high, low, close, volume FROM candles WHERE ts = '2021-12-31 23:01:00+00'")
        ).one()
    assert tuple(row) == (46319.0, 46385.0, 46319.0, 46377.0, 2300413.7295)


def test_overlapping_files_merge_and_gaps_are_reported(engine, tmp_path):
    a = _csv(tmp_path, "a.csv", _minute_rows(0, 100, skip={40, 41, 42}))
    b = _csv(tmp_path, "b.csv", _minute_rows(50, 100, skip={120}))
    ra = ingest_candles(engine, a, "TEST", "1m")
    assert (ra.loaded, ra.duplicates) == (97, 0)
    assert [(g.missing_bars, g.after_ts.minute, g.before_ts.minute) for g in ra.gaps] == [(3, 39, 43)]

    rb = ingest_candles(engine, b, "TEST", "1m")
    assert (rb.loaded, rb.duplicates, rb.conflicts) == (49, 50, 0)
    # Gaps are those of the stored series over b's range: the hole at minute 120 only.
    assert [g.missing_bars for g in rb.gaps] == [1]
    assert _count(engine, "TEST") == 146


def test_redelivered_rows_with_other_values_keep_the_stored_ones(engine, tmp_path):
    ingest_candles(engine, _csv(tmp_path, "a.csv", _minute_rows(0, 5)), "TEST", "1m")
    changed = [r.rsplit(",", 1)[0] + ",777" if i == 2 else r for i, r in enumerate(_minute_rows(0, 5))]
    report = ingest_candles(engine, _csv(tmp_path, "b.csv", changed), "TEST", "1m")
    assert (report.loaded, report.duplicates, report.conflicts) == (0, 5, 1)


def test_each_bad_row_is_rejected_with_its_reason(engine, tmp_path):
    good = _minute_rows(0, 3)
    bad = [
        "2022-03-01 01:00:00,100,99,101,100,5",  # high < low
        "2022-03-01 01:01:00,100,102,99,101,-5",  # negative volume
        "2022-03-01 01:02:00,NaN,102,99,101,5",  # non-finite
        "2022-03-01 01:03:00,100,inf,99,101,5",  # non-finite
        "yesterday at noon,100,102,99,101,5",  # unparsable time
        "2022-03-01 01:05:00,100,abc,99,101,5",  # a string where a number belongs
        "2022-03-01 01:06:00,100,102,99",  # wrong column count
        "2022-03-01 01:07:00,0,0,0,0,5",  # non-positive price
        "2022-03-01 01:08:00,100,102,99,101,5",  # fine
    ]
    report = ingest_candles(engine, _csv(tmp_path, "bad.csv", good + bad), "TEST", "1m")
    assert report.loaded == 4 and report.rejected == 8
    assert report.reject_reasons == {
        "OHLC inconsistent": 1,
        "negative volume": 1,
        "non-finite": 2,
        "unparsable time": 1,
        "unparsable number": 1,
        "wrong column count": 1,
        "non-positive price": 1,
    }
    assert report.reject_lines["OHLC inconsistent"] == [5]  # header is line 1
    assert _count(engine, "TEST") == 4


def test_columns_in_memory_take_the_same_path(engine):
    times = np.arange("2022-03-01T00:00", "2022-03-01T00:05", dtype="datetime64[m]")
    report = ingest_candles(
        engine,
        {
            "timestamp": times,
            "open": np.full(5, 10.0),
            "high": np.full(5, 11.0),
            "low": np.array([9.0, 9.0, 12.0, 9.0, 9.0]),
            "close": np.full(5, 10.5),
            "volume": np.ones(5),
        },
        "ARR",
        "1m",
    )
    assert (report.loaded, report.rejected, report.reject_reasons) == (4, 1, {"OHLC inconsistent": 1})
    with engine.connect() as conn:
        first = conn.execute(sa.text("SELECT min(ts) FROM candles WHERE symbol = 'ARR'")).scalar()
    assert first == dt.datetime(2022, 3, 1, tzinfo=dt.UTC)


def test_bad_timeframe_symbol_and_header_are_refused(engine, tmp_path):
    path = _csv(tmp_path, "a.csv", _minute_rows(0, 2))
    with pytest.raises(ValidationError, match="timeframe"):
        ingest_candles(engine, path, "TEST", "fortnight")
    with pytest.raises(ValidationError, match="symbol"):
        ingest_candles(engine, path, " ", "1m")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("time,o,h,l,c,v\n")
    with pytest.raises(ValidationError, match="header"):
        ingest_candles(engine, wrong, "TEST", "1m")
    assert _count(engine, "TEST") == 0


def test_cli_reports_and_fails_cleanly(db_url, tmp_path, capsys):
    path = _csv(tmp_path, "a.csv", _minute_rows(0, 10, skip={4}) + ["2022-03-01 02:00:00,1,0,2,1,1"])
    assert cli.main(["ingest", "candles", str(path), "--symbol", "CLI", "--timeframe", "1m"]) == 0
    out = capsys.readouterr().out
    assert "loaded      9" in out and "OHLC inconsistent: 1" in out and "gaps        1 (1 missing bars)" in out
    assert cli.main(["ingest", "candles", str(tmp_path / "missing.csv"), "--symbol", "CLI", "--timeframe", "1m"]) == 1
    assert "candle file not found" in capsys.readouterr().err


def test_checked_rows_report_the_same_lines_whether_or_not_every_field_parses(engine, tmp_path):
    # Only values that parse: the whole file goes through the typed COPY. Adding one unparsable
    # field sends it through the slow path; every other verdict and line number must not change.
    rows = _minute_rows(0, 6)
    rows[1] = rows[1].rsplit(",", 1)[0] + ",-5"  # negative volume, line 3
    rows[4] = "2022-03-01 00:04:00,100,99,101,100,5"  # high < low, line 6
    typed = ingest_candles(engine, _csv(tmp_path, "typed.csv", rows), "TYPED", "1m")
    slow = ingest_candles(engine, _csv(tmp_path, "slow.csv", rows + ["2022-03-01 00:07:00,abc,1,1,1,1"]), "SLOW", "1m")
    assert (typed.rows_read, typed.loaded, typed.rejected) == (6, 4, 2)
    assert typed.reject_lines == {"negative volume": [3], "OHLC inconsistent": [6]}
    assert (slow.rows_read, slow.loaded, slow.rejected) == (7, 4, 3)
    assert slow.reject_lines == {**typed.reject_lines, "unparsable number": [8]}


def test_column_order_and_crlf_line_ends_are_accepted(engine, tmp_path):
    path = tmp_path / "crlf.csv"
    lines = ["volume,close,low,high,open,timestamp"]
    for row in _minute_rows(0, 3):
        ts, o, h, l, c, v = row.split(",")
        lines.append(",".join([v, c, l, h, o, ts]))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    report = ingest_candles(engine, path, "CRLF", "1m")
    assert (report.rows_read, report.loaded, report.rejected) == (3, 3, 0)
    with engine.connect() as conn:
        first = conn.execute(
            sa.text("SELECT open, high, low, close, volume FROM candles WHERE symbol = 'CRLF' ORDER BY ts LIMIT 1")
        ).one()
    assert tuple(first) == (100.0, 102.0, 99.0, 101.0, 10.0)


def test_concurrent_loads_of_the_same_file_store_each_candle_once(engine, real_candles_path):
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        reports = list(
            pool.map(lambda _: ingest_candles(engine, real_candles_path, "BTC-PERP", "1m", progress=False), range(2))
        )
    assert sum(r.loaded for r in reports) == 45031
    assert sorted(r.duplicates for r in reports) == [0, 45031]
    assert _count(engine, "BTC-PERP") == 45031
