"""Rapid price-change detection: velocity and volatility-spike events, set-based over candles."""
