"""Real BTC-PERP data with both kinds of calls: the RL tests' experiences (RL calls through the whole product
path) plus a CNN call on every one of their packages, all labelled by the outcome validator."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from app.client import Client, Prediction
from app.outcomes.validate import validate_outcomes
from tests.rl_replay.support import LATER, SETTINGS, SYMBOL, real_experiences

__all__ = ["SYMBOL", "cnn_and_rl_calls"]

CONTRARIAN = {"long": "short", "short": "long", "hold": "long"}


def cnn_and_rl_calls(engine: sa.Engine, path: Path) -> None:
    real_experiences(engine, path)
    with engine.connect() as conn:
        calls = conn.execute(
            sa.text(
                "SELECT package_id, predicted_at, horizon_s, action FROM predictions "
                "WHERE model_kind = 'rl' ORDER BY id"
            )
        ).all()
    with Client(engine) as client:
        for c in calls:
            client.insert_prediction(
                Prediction(
                    model_kind="cnn",
                    model_version="contrarian-v1",
                    action=CONTRARIAN[c.action],
                    confidence=0.55,
                    horizon_s=c.horizon_s,
                    predicted_at=c.predicted_at,
                ),
                package_id=c.package_id,
            )
    validate_outcomes(engine, SETTINGS, as_of=LATER)
