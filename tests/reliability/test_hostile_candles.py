"""Hostile candle files at ``ingest_candles`` (the path behind ``trainsrv ingest candles``).

Random CSV text, real files cut at any byte and real files with corrupted bytes: each load ends
in a report or a clear error (``TrainsrvError``, the header or argument named), the report's
counts add up, the table only ever holds candles that pass every check, and loading the same file
again adds nothing (duplicate delivery).
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import TrainsrvError
from app.ingest.candles import ingest_candles

TRIED: dict[str, int] = {}
FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
HEADER = "timestamp,open,high,low,close,volume\n"
TEXT = st.characters(blacklist_characters="\n\r")

FIELDS = st.one_of(
    st.sampled_from(
        [
            "",
            "nan",
            "NaN",
            "inf",
            "-inf",
            "1e400",
            "-1",
            "0",
            "abc",
            "1,5",
            '"1"',
            "2022-13-45T00:00:00",
            "2022-01-01T00:00:00+25:00",
            "infinity",
            "allballs",
            "1641016800",
            "0001-01-01T00:00:00",
            "9999-12-31T23:59:00",
            "\ufeff",
            "now",
            "epoch",
            "J2451187",
            "12/31/2021",
            "2022-01-01 00:00:00 BC",
            "\x00",
            "1\x002",
        ]
    ),
    st.floats().map(repr),
    st.integers(-(10**20), 10**20).map(str),
    st.text(TEXT, max_size=12),
)


@st.composite
def rows(draw):
    """A good row (real-looking), a row with one hostile field, or a line of noise."""
    minute = draw(st.integers(0, 500))
    good = [f"2022-01-01T{minute // 60:02d}:{minute % 60:02d}:00", "100.5", "101", "99.5", "100.25", "12.5"]
    kind = draw(st.sampled_from(["good", "good", "field", "noise", "columns"]))
    if kind == "field":
        good[draw(st.integers(0, 5))] = draw(FIELDS)
    elif kind == "noise":
        return draw(st.text(TEXT, max_size=40))
    elif kind == "columns":
        good = good[: draw(st.integers(0, 5))] + draw(st.lists(FIELDS, max_size=2))
    return ",".join(good)


def _state(engine) -> tuple[int, int]:
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT count(*) FROM candles")).scalar()
        broken = conn.execute(
            sa.text(
                "SELECT count(*) FROM candles WHERE NOT (low > 0 AND high >= greatest(open, close) AND "
                "low <= least(open, close) AND volume >= 0 AND 'NaN' NOT IN (open, high, low, close, volume) "
                "AND ts >= '2000-01-01' AND ts <= now())"
            )
        ).scalar()
    return total, broken


def _load(engine, path, name: str):
    """One load: the report, or None after a clear refusal; the table stays consistent either way."""
    TRIED[name] = TRIED.get(name, 0) + 1
    before, _ = _state(engine)
    try:
        report = ingest_candles(engine, path, "HOSTILE", "1m", progress=False)
    except TrainsrvError as exc:
        assert str(exc) and _state(engine) == (before, 0)
        return None
    after, broken = _state(engine)
    assert broken == 0
    assert after == before + report.loaded
    assert report.rows_read == report.loaded + report.duplicates + report.rejected, report
    return report


@pytest.fixture
def fresh(engine):
    """Empties the candles table before each example (hypothesis reuses the test's database)."""

    def clear():
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM candles"))

    return clear


def test_random_csv_text(engine, tmp_path, fresh):
    @FAST
    @given(body=st.lists(rows(), max_size=30), crlf=st.booleans(), bom=st.booleans(), cut=st.booleans())
    def run(body, crlf, bom, cut):
        fresh()
        text = ("\ufeff" if bom else "") + HEADER + "\n".join(body) + ("" if cut else "\n")
        path = tmp_path / "c.csv"
        path.write_bytes(text.replace("\n", "\r\n" if crlf else "\n").encode("utf-8", "surrogatepass"))
        report = _load(engine, path, "random CSV files")
        if report is not None:  # the same file again: nothing new (duplicate delivery)
            again = _load(engine, path, "random CSV files (re-delivered)")
            assert again.loaded == 0 and again.duplicates == report.loaded + report.duplicates

    run()


@pytest.fixture(scope="module")
def real_head(real_candles_path) -> bytes:
    with open(real_candles_path, "rb") as f:
        return b"".join(f.readline() for _ in range(400))


def test_truncated_real_files(engine, tmp_path, real_head, fresh):
    @FAST
    @given(cut=st.integers(0, len(real_head)))
    def run(cut):
        fresh()
        path = tmp_path / "cut.csv"
        path.write_bytes(real_head[:cut])
        report = _load(engine, path, "truncated real files")
        if report is not None:
            complete = real_head[:cut].count(b"\n") - 1  # whole data lines before the cut
            assert complete <= report.loaded <= complete + 1  # plus a cut last line that still parses

    run()


def test_corrupted_real_files(engine, tmp_path, real_head, fresh):
    @FAST
    @given(edits=st.lists(st.tuples(st.integers(0, len(real_head) - 1), st.integers(0, 255)), min_size=1, max_size=8))
    def run(edits):
        fresh()
        data = bytearray(real_head)
        for offset, byte in edits:
            data[offset] = byte
        path = tmp_path / "corrupt.csv"
        path.write_bytes(bytes(data))
        report = _load(engine, path, "corrupted real files")
        if report is not None:
            assert report.loaded + report.rejected + report.duplicates >= 399 - 2 * len(edits)

    run()


@pytest.mark.parametrize("field", [0, 1, 5])
def test_a_nul_byte_rejects_its_row_as_unparsable(engine, tmp_path, field):
    good = ["2022-01-01T00:01:00", "100", "101", "99", "100", "1"]
    good[field] = good[field][:2] + "\x00" + good[field][2:]
    path = tmp_path / "nul.csv"
    path.write_bytes((HEADER + "2022-01-01T00:00:00,100,101,99,100,1\n" + ",".join(good) + "\n").encode())
    report = ingest_candles(engine, path, "NUL", "1m", progress=False)
    reason = "unparsable time" if field == 0 else "unparsable number"
    assert (report.loaded, report.reject_reasons, report.reject_lines) == (1, {reason: 1}, {reason: [3]})


@pytest.mark.parametrize(
    "ts", ["now", "tomorrow", "epoch", "J2451187", "12/31/2021", "2022-01-01 00:00:00 UTC", "2021-12-31 00:00:00 BC"]
)
def test_special_or_non_iso_times_are_unparsable(engine, tmp_path, ts):
    path = tmp_path / "special.csv"
    path.write_text(HEADER + f"{ts},100,101,99,100,1\n2022-01-01T00:00:00,100,101,99,100,1\n")
    report = ingest_candles(engine, path, "SPECIAL", "1m", progress=False)
    assert (report.loaded, report.reject_reasons) == (1, {"unparsable time": 1})


@pytest.mark.parametrize(
    "ts",
    [
        "0021-12-31 00:00:00",
        " 021-12-31 00:00:00",
        "1999-12-31T23:59:00Z",
        "9999-12-31T23:59:00",
        "2999-01-01T00:00:00+01:00",
    ],
)
def test_absurd_years_are_out_of_range(engine, tmp_path, ts):
    path = tmp_path / "range.csv"
    path.write_text(HEADER + f"{ts},100,101,99,100,1\n")
    report = ingest_candles(engine, path, "RANGE", "1m", progress=False)
    assert (report.loaded, report.reject_reasons) == (0, {"time out of range": 1})


@pytest.mark.parametrize(
    "ts,stored",
    [
        ("2022-01-01 00:00:00.000000", "2022-01-01T00:00:00+00:00"),
        ("2022-01-01T01:00:00+01", "2022-01-01T00:00:00+00:00"),
        ("2022-01-01T05:30:00+0530", "2022-01-01T00:00:00+00:00"),
        ("2022-01-01T00:00Z", "2022-01-01T00:00:00+00:00"),
        ("2022-01-01", "2022-01-01T00:00:00+00:00"),
        ("20220101T000000", "2022-01-01T00:00:00+00:00"),
        ("2022-001", "2022-01-01T00:00:00+00:00"),
    ],
)
def test_iso_times_in_every_accepted_form(engine, tmp_path, ts, stored):
    path = tmp_path / "iso.csv"
    path.write_text(HEADER + f"{ts},100,101,99,100,1\n")
    report = ingest_candles(engine, path, "ISO", "1m", progress=False)
    assert report.loaded == 1 and report.first_ts.isoformat() == stored
