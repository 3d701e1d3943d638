"""Timeframe labels such as ``1m`` / ``15m`` / ``1h``: a count and a unit (s, m, h, d, w).

The same rule lives in SQL as ``ingest_timeframe_s(text)``; a test keeps the two equal.
"""

from __future__ import annotations

import re

from app.errors import ValidationError

_PATTERN = re.compile(r"^([0-9]+)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def seconds(timeframe: str, field: str = "timeframe") -> int:
    """Length of one bar of ``timeframe`` in seconds; ValidationError naming ``field`` if malformed."""
    match = _PATTERN.match(timeframe) if isinstance(timeframe, str) else None
    if not match or int(match.group(1)) == 0:
        raise ValidationError(field, f"{timeframe!r} is not a timeframe like 1m, 5m, 1h or 1d")
    return int(match.group(1)) * _UNIT_S[match.group(2)]
