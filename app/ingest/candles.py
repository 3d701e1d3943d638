"""Bulk candle ingest: stream a CSV (or columns in memory) into ``candles``, COPY-fast and idempotent.

Path: rows are streamed (bounded memory) with COPY into a session-local staging table as raw
text, then checked and merged by set-based SQL (``sql/queries/ingest.sql``): each row is parsed
and either rejected with a reason (unparsable time, unparsable number, non-finite, negative
volume, non-positive price, OHLC inconsistent) or inserted with ``ON CONFLICT DO NOTHING`` —
so re-loading a file is idempotent and overlapping files merge (stored rows win; a differing
re-delivery is counted as a conflict). The whole file is one transaction. Times without an
offset are taken as UTC; candle times are bar **open** times.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from tqdm import tqdm

from app.db import queries
from app.errors import TrainsrvError, ValidationError
from app.ingest import timeframes

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
# Files at least this large get a progress bar (on stderr).
PROGRESS_MIN_BYTES = 1_000_000
# The file is read and sent in chunks of about this many bytes (bounded memory).
CHUNK_BYTES = 1 << 20


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


def ingest_candles(engine: sa.Engine, source: Any, symbol: str, timeframe: str, *,
                   progress: bool | None = None) -> CandleReport:
    """Load candles from ``source`` — a CSV path with header ``timestamp,open,high,low,close,volume``
    (any column order), or a DataFrame-like / mapping of columns (``timestamp`` or ``ts``, else the
    index; datetimes, ISO strings or epoch seconds) — into ``candles`` for ``symbol`` / ``timeframe``.
    Returns a CandleReport. ``progress``: None shows a bar for files over 1 MB."""
    if not isinstance(symbol, str) or not symbol.strip():
        raise ValidationError("symbol", "must be a non-empty string")
    step_s = timeframes.seconds(timeframe)
    report = CandleReport(symbol=symbol, timeframe=timeframe)
    started = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL TimeZone = 'UTC'"))
        conn.execute(queries.get("ingest.create_candle_staging"))
        _copy_rows(conn, _rows(source, report, progress))
        conn.execute(queries.get("ingest.classify_candle_staging"))
        _merge(conn, report, step_s)
    report.elapsed_s = time.perf_counter() - started
    return report


def _copy_rows(conn: sa.Connection, chunks: Iterator[str]) -> None:
    cursor = conn.connection.driver_connection.cursor()
    statement = ("COPY ingest_candle_staging (line_no, raw_ts, raw_open, raw_high, raw_low, raw_close, "
                 "raw_volume) FROM STDIN WITH (FORMAT csv)")
    with cursor.copy(statement) as copy:
        for chunk in chunks:
            copy.write(chunk)


def _merge(conn: sa.Connection, report: CandleReport, step_s: int) -> None:
    for r in conn.execute(queries.get("ingest.candle_rejects")):
        report.rejected += r.n
        report.reject_reasons[r.reason] = report.reject_reasons.get(r.reason, 0) + r.n
        report.reject_lines[r.reason] = sorted(report.reject_lines.get(r.reason, []) + list(r.first_lines))[:5]
    key = {"symbol": report.symbol, "timeframe": report.timeframe}
    merged = conn.execute(queries.get("ingest.merge_candles"), key).one()
    report.loaded, report.conflicts = merged.loaded, merged.conflicts
    report.duplicates = merged.accepted - merged.loaded
    report.first_ts, report.last_ts = merged.first_ts, merged.last_ts
    if merged.first_ts is not None:
        gaps = conn.execute(queries.get("ingest.candle_gaps"),
                            {**key, "step_s": step_s, "first_ts": merged.first_ts, "last_ts": merged.last_ts})
        report.gaps = [Gap(g.after_ts, g.before_ts, g.missing_bars) for g in gaps]


# -- sources ------------------------------------------------------------------------------------

def _rows(source: Any, report: CandleReport, progress: bool | None) -> Iterator[str]:
    """CSV text chunks of staging rows ``line_no,timestamp,open,high,low,close,volume``."""
    if isinstance(source, (str, os.PathLike)):
        return _file_chunks(Path(source), report, progress)
    return _column_chunks(source, report)


def _file_chunks(path: Path, report: CandleReport, progress: bool | None) -> Iterator[str]:
    if not path.is_file():
        raise TrainsrvError(f"candle file not found: {path}")
    size = path.stat().st_size
    show = size >= PROGRESS_MIN_BYTES if progress is None else progress
    with path.open("r", encoding="utf-8", errors="replace", newline="") as f, \
            tqdm(total=size, unit="B", unit_scale=True, desc=path.name, disable=not show, leave=False) as bar:
        order = _header_order(f.readline(), path)
        line_no = 1
        while lines := f.readlines(CHUNK_BYTES):
            bar.update(sum(len(line) for line in lines))
            out = []
            for line in lines:
                line_no += 1
                row = _staging_row(line, line_no, order, report)
                if row is not None:
                    out.append(row)
            yield "".join(out)


def _staging_row(line: str, line_no: int, order: list[int] | None, report: CandleReport) -> str | None:
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    report.rows_read += 1
    if line.count(",") != len(COLUMNS) - 1 or '"' in line:
        # Quoted fields are not part of this format; a quote would also break the CSV framing.
        report.reject("wrong column count", line_no)
        return None
    if order is not None:
        fields = line.split(",")
        line = ",".join(fields[i] for i in order)
    return f"{line_no},{line}\n"


def _header_order(header: str, path: Path) -> list[int] | None:
    names = [h.strip().lower() for h in header.strip().lstrip("\ufeff").split(",")]
    missing = [c for c in COLUMNS if c not in names]
    if missing or len(names) != len(COLUMNS):
        raise ValidationError("header", f"{path.name} must have the columns {','.join(COLUMNS)}; "
                                        f"got {header.strip()!r}")
    order = [names.index(c) for c in COLUMNS]
    return None if order == list(range(len(COLUMNS))) else order


def _column_chunks(source: Any, report: CandleReport) -> Iterator[str]:
    columns = [_column(source, c) for c in COLUMNS]
    lengths = {len(c) for c in columns}
    if len(lengths) != 1:
        raise ValidationError("source", f"columns differ in length: {sorted(lengths)}")
    out = []
    for i, values in enumerate(zip(*columns), start=1):
        line = ",".join([_time_text(values[0]), *(_number_text(v) for v in values[1:])])
        row = _staging_row(line, i, None, report)
        if row is not None:
            out.append(row)
        if len(out) >= 10_000:
            yield "".join(out)
            out = []
    yield "".join(out)


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
            return dt.datetime.fromtimestamp(float(value), dt.timezone.utc).isoformat()
        except (ValueError, OverflowError, OSError):
            return str(value)
    return str(value)


def _number_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)
