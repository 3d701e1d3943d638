"""Build RL transitions (state, action, reward, next state, done) from validated predictions.

A model's predictions on one symbol, in time order, form its trajectory: the state is the
package a prediction was made from, the reward the realised profit of the action taken (the
outcome's ``actual_profit``, after costs), the next state the package of the model's next
prediction. A next prediction further away than ``experience_max_gap_s`` ends the episode
(``done``, no next state); the newest prediction waits for its successor until that gap has
passed. The SQL is the named query ``experiences.build``.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa

from app.config import Settings, get_settings
from app.db import locks, models, queries
from app.errors import ValidationError

log = logging.getLogger(__name__)


def build_experiences(
    engine: sa.Engine,
    settings: Settings | None = None,
    *,
    symbol: str | None = None,
    model_kind: str = "rl",
    as_of: dt.datetime | None = None,
) -> dict:
    """Insert new transitions and refresh changed ones (relabelled outcomes, late predictions).

    Returns ``{"inserted": n, "updated": m}``. Idempotent: a re-run with nothing new writes nothing.
    New experiences enter the replay at its running maximum priority; refreshed ones keep theirs.
    """
    settings = settings or get_settings()
    if model_kind not in models.MODEL_KINDS:
        raise ValidationError("model_kind", f"must be one of {', '.join(models.MODEL_KINDS)}, got {model_kind!r}")
    if not settings.experience_max_gap_s > 0:
        raise ValidationError("experience_max_gap_s", f"must be > 0, got {settings.experience_max_gap_s}")
    params = {
        "model_kind": model_kind,
        "symbol": symbol,
        "max_gap_s": settings.experience_max_gap_s,
        "as_of": as_of or dt.datetime.now(dt.UTC),
    }
    with engine.begin() as conn:
        locks.take(conn, "experiences.lock_building", "experience building")
        counts = dict(conn.execute(queries.get("experiences.build"), params).mappings().one())
    log.info("experiences built: %s", counts)
    return counts
