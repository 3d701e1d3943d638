"""Outcome validation: what each prediction actually earned, labelled set-based in SQL from the
candles strictly after it and within its horizon (conventions: docs/outcomes.md)."""
