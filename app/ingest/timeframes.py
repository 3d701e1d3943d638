"""Timeframe labels such as ``1m`` / ``15m`` / ``1h``: a count and a unit (s, m, h, d, w).

The same rule lives in SQL as ``ingest_timeframe_s(text)``; a test keeps the two equal.
"""

from __future__ import annotations

import re

from app.errors import ValidationError

_PATTERN = re.compile(r"^([0-9]+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_SECONDS = 366 * 86400  # a longer bar is refused (SQL: the same bound)


def seconds(timeframe: str, field: str = "timeframe") -> int:
    """Length of one bar of ``timeframe`` in seconds; ValidationError naming ``field`` if malformed."""
    match = _PATTERN.fullmatch(timeframe) if isinstance(timeframe, str) else None
    if not match or not 1 <= int(match.group(1)) * _UNIT_S[match.group(2)] <= MAX_SECONDS:
        shown = repr(timeframe[:40]) if isinstance(timeframe, str) else repr(timeframe)
        raise ValidationError(field, f"{shown} is not a timeframe like 1m, 5m, 1h or 1d (at most 366 days)")
    return int(match.group(1)) * _UNIT_S[match.group(2)]
