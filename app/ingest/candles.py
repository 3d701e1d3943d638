"""Bulk candle ingest: stream a CSV (or columns in memory) into ``candles``, COPY-fast and idempotent.

Path: rows are streamed (bounded memory) with COPY straight into a session-local *typed*
staging table, so PostgreSQL's own input functions parse each number once. Only when that COPY
fails (a field that does not parse, a wrong column count, quotes, blank lines, a NUL byte) is
the load redone the slow way: COPY as raw text with line numbers, then parse field by field,
naming each unparsable row; only ISO 8601 times are taken. Either way one set-based statement
(``sql/queries/ingest.sql``) then rejects rows with a reason (unparsable time, time out of range,
unparsable number, non-finite, negative volume, non-positive price, OHLC inconsistent) and
inserts the new rows — so re-loading a file is idempotent and overlapping
files merge (stored rows win; a differing re-delivery is counted as a conflict). The whole file
is one transaction. Times without an offset are taken as UTC; candle times are bar **open** times.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import psycopg.sql
import sqlalchemy as sa
from tqdm import tqdm

from app.config import get_settings
from app.db import queries
from app.errors import TrainsrvError, ValidationError
from app.ingest import timeframes

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
# Files at least this large get a progress bar (on stderr).
PROGRESS_MIN_BYTES = 1_000_000
# The file is read and sent in chunks of about this many bytes (bounded memory).
CHUNK_BYTES = 1 << 20
# Attempts at the merge when concurrent writers keep inserting the same candles.
MERGE_ATTEMPTS = 3


@dataclasses.dataclass
class Gap:
    """A hole in the stored series: ``missing_bars`` bars absent between two stored bars."""

    after_ts: dt.datetime
    before_ts: dt.datetime
    missing_bars: int


@dataclasses.dataclass
class CandleReport:
    """Outcome of one ingest: counts, reject reasons (with first line numbers) and gaps.

    ``duplicates`` are accepted rows whose time was already stored or repeated in the source;
    ``conflicts`` (a subset) are those whose values differ from the stored row, which was kept.
    Line numbers count the header as line 1 for files, and start at 1 for in-memory columns."""

    symbol: str
    timeframe: str
    rows_read: int = 0
    loaded: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0
    reject_reasons: dict[str, int] = dataclasses.field(default_factory=dict)
    reject_lines: dict[str, list[int]] = dataclasses.field(default_factory=dict)
    gaps: list[Gap] = dataclasses.field(default_factory=list)
    first_ts: dt.datetime | None = None
    last_ts: dt.datetime | None = None
    elapsed_s: float = 0.0

    @property
    def missing_bars(self) -> int:
        return sum(g.missing_bars for g in self.gaps)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["missing_bars"] = self.missing_bars
        return out

    def reject(self, reason: str, line_no: int) -> None:
        self.rejected += 1
        self.reject_reasons[reason] = self.reject_reasons.get(reason, 0) + 1
        lines = self.reject_lines.setdefault(reason, [])
        if len(lines) < 5:
            lines.append(line_no)


def ingest_candles(
    engine: sa.Engine,
    source: Any,
    symbol: str,
    timeframe: str,
    *,
    progress: bool | None = None,
    max_clock_skew_s: float | None = None,
) -> CandleReport:
    """Load candles from ``source`` — a CSV path with header ``timestamp,open,high,low,close,volume``
    (any column order), or a DataFrame-like / mapping of columns (``timestamp`` or ``ts``, else the
    index; datetimes, ISO strings or epoch seconds) — into ``candles`` for ``symbol`` / ``timeframe``.
    Returns a CandleReport. ``progress``: None shows a bar for files over 1 MB. Bar open times
    later than now by more than ``max_clock_skew_s`` (default: the setting) are rejected."""
    if not isinstance(symbol, str) or not symbol.strip():
        raise ValidationError("symbol", "must be a non-empty string")
    step_s = timeframes.seconds(timeframe)
    if max_clock_skew_s is None:
        max_clock_skew_s = get_settings().max_clock_skew_s
    candle_source = _source(source, progress)
    report = CandleReport(symbol=symbol, timeframe=timeframe)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.exec_driver_sql(queries.sql("ingest.candle_load_session"))
        conn.execute(queries.get("ingest.create_candle_rows"))
        typed = _copy_typed(conn, candle_source)
        if not typed:
            _copy_raw(conn, candle_source, report)
        _merge(conn, report, step_s, max_clock_skew_s, candle_source.first_line, count_rows=typed)
    if report.loaded >= ANALYZE_AFTER_ROWS:
        _analyze(engine)
    report.elapsed_s = time.perf_counter() - started
    return report


def _analyze(engine: sa.Engine) -> None:
    # Outcome labelling joins predictions to candles right after a bulk load; before autovacuum
    # has analysed the new rows the planner picks nested loops that are 1000x slower.
    with engine.connect() as conn:
        conn.execute(queries.get("ingest.analyze_candles"))
        conn.commit()


ANALYZE_AFTER_ROWS = 10_000


# The typed COPY takes only text made of these characters: ISO 8601 times and plain numbers (digits,
# - : . + T Z, e / E for exponents, spaces). Anything else goes the slow way, whose parse refuses
# the time words PostgreSQL would accept ('now', 'epoch', 'J2451187', 'BC', '12/31/2021') and
# names the rows holding quotes (not part of the format), 'nan' / 'inf' or a NUL byte.
_NOT_PLAIN = re.compile(r"[^0-9\-:.+TZeE ,\r\n]")


class _NeedsSlowPath(Exception):
    """The source cannot go through the typed COPY as it is."""


def _copy_typed(conn: sa.Connection, source: _Source) -> bool:
    """COPY the source into the typed staging table; False (nothing staged) if any field does
    not parse or the text is not plain CSV, in which case the slow path takes over."""
    # The file's own column order, so the only statement built here: identifiers composed by psycopg.
    statement = psycopg.sql.SQL("COPY ingest_candle_rows ({}) FROM STDIN WITH (FORMAT csv)").format(
        psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(_STAGED[c]) for c in source.columns)
    )
    try:
        with conn.begin_nested():
            cursor = conn.connection.driver_connection.cursor()
            with cursor.copy(statement) as copy:
                for chunk in source.text_chunks():
                    if _NOT_PLAIN.search(chunk):
                        raise _NeedsSlowPath
                    copy.write(chunk)
    except (_NeedsSlowPath, psycopg.errors.DataError):
        return False
    return True


def _copy_raw(conn: sa.Connection, source: _Source, report: CandleReport) -> None:
    conn.execute(queries.get("ingest.create_candle_staging"))
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(queries.sql("ingest.copy_candle_staging")) as copy:
        for chunk in source.numbered_chunks(report):
            copy.write(chunk)
    conn.execute(queries.get("ingest.parse_candle_staging"))


def _merge(
    conn: sa.Connection, report: CandleReport, step_s: int, max_clock_skew_s: float, first_line: int, count_rows: bool
) -> None:
    key = {"symbol": report.symbol, "timeframe": report.timeframe}
    merged = _merge_rows(conn, {**key, "max_clock_skew_s": max_clock_skew_s})
    if count_rows:  # the typed COPY staged every line: nothing was skipped or refused before
        report.rows_read = merged.staged
    for reason, n, first_rows in merged.rejects:
        report.rejected += n
        report.reject_reasons[reason] = report.reject_reasons.get(reason, 0) + n
        lines = [row + first_line - 1 for row in first_rows]
        report.reject_lines[reason] = sorted(report.reject_lines.get(reason, []) + lines)[:5]
    report.loaded, report.conflicts = merged.loaded, merged.conflicts
    report.duplicates = merged.accepted - merged.loaded
    report.first_ts, report.last_ts = merged.first_ts, merged.last_ts
    if merged.first_ts is not None:
        gaps = conn.execute(
            queries.get("ingest.candle_gaps"),
            {**key, "step_s": step_s, "first_ts": merged.first_ts, "last_ts": merged.last_ts},
        )
        report.gaps = [Gap(g.after_ts, g.before_ts, g.missing_bars) for g in gaps]


def _merge_rows(conn: sa.Connection, key: dict[str, str]) -> Any:
    """Run the merge; a concurrent writer of the same candles makes its plain INSERT hit the
    primary key, and running it again (its anti-join now sees those rows) is then safe."""
    for attempt in range(1, MERGE_ATTEMPTS + 1):
        try:
            with conn.begin_nested():
                return conn.execute(queries.get("ingest.merge_candle_rows"), key).one()
        except sa.exc.IntegrityError as exc:
            if attempt == MERGE_ATTEMPTS or not isinstance(exc.orig, psycopg.errors.UniqueViolation):
                raise
    raise AssertionError("unreachable")


# -- sources ------------------------------------------------------------------------------------

# Staging column of each source column.
_STAGED = {"timestamp": "ts", "open": "open", "high": "high", "low": "low", "close": "close", "volume": "volume"}


def _source(source: Any, progress: bool | None) -> _Source:
    if isinstance(source, (str, os.PathLike)):
        return _FileSource(Path(source), progress)
    return _ColumnSource(source)


class _Source:
    """Candle rows that can be read twice: as plain CSV text (``columns`` in file order) for the
    typed COPY, and as numbered staging rows for the slow path. ``first_line`` is the line
    number of the first data row (2 for a file with its header, 1 for columns in memory)."""

    columns: tuple[str, ...] = COLUMNS
    first_line = 1

    def text_chunks(self) -> Iterator[str]:
        raise NotImplementedError

    def numbered_chunks(self, report: CandleReport) -> Iterator[str]:
        raise NotImplementedError


class _FileSource(_Source):
    first_line = 2

    def __init__(self, path: Path, progress: bool | None):
        if not path.is_file():
            raise TrainsrvError(f"candle file not found: {path}")
        self.path = path
        self.size = path.stat().st_size
        self.show = self.size >= PROGRESS_MIN_BYTES if progress is None else progress
        with self._open() as f:
            self.columns = _header_columns(f.readline(MAX_HEADER_CHARS), path)

    def _open(self):
        return self.path.open("r", encoding="utf-8", errors="replace", newline="")

    def _bar(self):
        return tqdm(total=self.size, unit="B", unit_scale=True, desc=self.path.name, disable=not self.show, leave=False)

    def text_chunks(self) -> Iterator[str]:
        with self._open() as f, self._bar() as bar:
            bar.update(len(f.readline()))
            while chunk := f.read(CHUNK_BYTES):
                bar.update(len(chunk))
                yield chunk

    def numbered_chunks(self, report: CandleReport) -> Iterator[str]:
        order = [self.columns.index(c) for c in COLUMNS]
        order = None if order == list(range(len(COLUMNS))) else order
        with self._open() as f, self._bar() as bar:
            bar.update(len(f.readline()))
            line_no = 1
            while lines := f.readlines(CHUNK_BYTES):
                bar.update(sum(len(line) for line in lines))
                out = []
                for line in lines:
                    line_no += 1
                    row = _staging_row(line, line_no - 1, line_no, order, report)
                    if row is not None:
                        out.append(row)
                yield "".join(out)


class _ColumnSource(_Source):
    def __init__(self, source: Any):
        self.rows = [
            (_time_text(values[0]), *(_number_text(v) for v in values[1:])) for values in zip(*_columns(source))
        ]

    def text_chunks(self) -> Iterator[str]:
        for start in range(0, len(self.rows), 10_000):
            yield "".join(",".join(row) + "\n" for row in self.rows[start : start + 10_000])

    def numbered_chunks(self, report: CandleReport) -> Iterator[str]:
        out = []
        for i, row in enumerate(self.rows, start=1):
            staged = _staging_row(",".join(row), i, i, None, report)
            if staged is not None:
                out.append(staged)
        yield "".join(out)


def _staging_row(line: str, row_no: int, line_no: int, order: list[int] | None, report: CandleReport) -> str | None:
    """One numbered raw staging row, or None for a blank line or a refused one (wrong column count)."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    report.rows_read += 1
    if line.count(",") != len(COLUMNS) - 1 or '"' in line:
        # Quoted fields are not part of this format; a quote would also break the CSV framing.
        report.reject("wrong column count", line_no)
        return None
    if order is not None or "\x00" in line:
        fields = line.split(",")
        # PostgreSQL text cannot hold a NUL byte: such a field is staged empty, so the row is
        # rejected as unparsable (time or number) like any other garbage in that field.
        fields = ["" if "\x00" in f else f for f in fields]
        line = ",".join(fields[i] for i in order) if order is not None else ",".join(fields)
    return f"{row_no},{line}\n"


MAX_HEADER_CHARS = 4096  # a header line is read at most this far (a 20 MB 'header' is no header)


def _header_columns(header: str, path: Path) -> tuple[str, ...]:
    names = [h.strip().lower() for h in header.strip().lstrip("\ufeff").split(",")]
    missing = [c for c in COLUMNS if c not in names]
    if missing or len(names) != len(COLUMNS):
        shown = header.strip()[:80]  # repr() escapes control characters; a long line is cut
        raise ValidationError(
            "header",
            f"{path.name} must have the columns {','.join(COLUMNS)}; "
            f"got {shown!r}{' (cut)' if len(header.strip()) > 80 else ''}",
        )
    return tuple(names)


def _columns(source: Any) -> list[list]:
    columns = [_column(source, c) for c in COLUMNS]
    lengths = {len(c) for c in columns}
    if len(lengths) != 1:
        raise ValidationError("source", f"columns differ in length: {sorted(lengths)}")
    return columns


def _column(source: Any, name: str) -> list:
    candidates = ("timestamp", "ts") if name == "timestamp" else (name,)
    for key in candidates:
        if (isinstance(source, Mapping) and key in source) or key in getattr(source, "columns", ()):
            return list(source[key])
    if name == "timestamp" and hasattr(source, "index") and not isinstance(source, Mapping):
        return list(source.index)
    raise ValidationError(name, "column missing from the candle source")


def _time_text(value: Any) -> str:
    if isinstance(value, np.datetime64):
        return str(value.astype("datetime64[us]"))
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(float(value), dt.UTC).isoformat()
        except (ValueError, OverflowError, OSError):
            return str(value)
    return str(value)


def _number_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)
