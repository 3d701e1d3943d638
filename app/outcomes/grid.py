"""The bar grid that labelling and event detection read candles on.

Both assume bars on the grid that starts at the Unix epoch (``date_bin(bar, ts, epoch)`` in
SQL), which is where exchanges put second, minute, hour and day bars. Weekly bars are refused:
weeks on that grid start on Thursdays, not where exchanges start them.
"""

from __future__ import annotations

from app.errors import ValidationError
from app.ingest import timeframes


def bar_seconds(timeframe: str, field: str) -> int:
    """Length of one bar of ``timeframe`` in seconds; ValidationError naming ``field`` if unusable."""
    seconds = timeframes.seconds(timeframe, field)
    if timeframe.endswith("w"):
        raise ValidationError(field, f"weekly bars ({timeframe!r}) are not on the epoch grid; use 1d or shorter")
    return seconds
