"""Registry reads and deployment records (torch-free: ``trainsrv models list`` needs no model).

The deployed model of a (kind, symbol) is the newest promotion or rollback in ``model_deployments``
(``v_deployed_models``). Decisions on one (kind, symbol) are serialised by a transaction-level
advisory lock (``lock``), so two gates never both promote over the same incumbent.
"""

from __future__ import annotations

import sqlalchemy as sa

from app.db import models, queries
from app.errors import TrainsrvError, ValidationError
from app.recording import sessions

KINDS = ("cnn", "rl")


def lock(conn: sa.Connection, model_kind: str, symbol: str) -> None:
    """Hold the (kind, symbol) decision lock until ``conn``'s transaction ends."""
    conn.execute(queries.get("registry.lock_deployment"), {"model_kind": model_kind, "symbol": symbol})


def deployed(conn: sa.Connection, model_kind: str, symbol: str):
    """The deployed model's row (session_id, version, deployment_id, deployed_at, ...) or None."""
    return conn.execute(queries.get("registry.deployed"), {"model_kind": model_kind, "symbol": symbol}).first()


def model(conn: sa.Connection, session_id: int) -> dict:
    """The registry entry of a session; refuses sessions that are not candidate models."""
    row = conn.execute(queries.get("registry.model"), {"session_id": session_id}).mappings().first()
    if row is None:
        raise ValidationError(
            "session",
            f"session {session_id} is not a model in the registry (only succeeded "
            "CNN / RL training sessions with a symbol are; replays are not)",
        )
    return dict(row)


def config(conn: sa.Connection, session_id: int) -> dict:
    """A session's stored config (model, input spec, evaluation slice, ...)."""
    return sessions.get(conn, session_id).config


def models_list(
    conn: sa.Connection, model_kind: str | None = None, symbol: str | None = None, limit: int = 50
) -> list[dict]:
    rows = conn.execute(queries.get("registry.models"), {"model_kind": model_kind, "symbol": symbol, "limit": limit})
    return [dict(r) for r in rows.mappings()]


def decisions(conn: sa.Connection, session_id: int) -> list[dict]:
    return [dict(r) for r in conn.execute(queries.get("registry.decisions"), {"session_id": session_id}).mappings()]


def live_performance(conn: sa.Connection, model_kind: str | None = None, symbol: str | None = None) -> list[dict]:
    rows = conn.execute(queries.get("registry.live_performance"), {"model_kind": model_kind, "symbol": symbol})
    return [dict(r) for r in rows.mappings()]


def record(
    conn: sa.Connection,
    *,
    model_kind: str,
    symbol: str,
    action: str,
    session_id: int,
    previous_session_id: int | None,
    source: str,
    reason: str,
    evidence: dict,
) -> int:
    """Insert one decision (a promotion or rollback also NOTIFYs ``trainsrv_models`` on commit)."""
    return conn.execute(
        sa.insert(models.ModelDeployment)
        .values(
            model_kind=model_kind,
            symbol=symbol,
            action=action,
            session_id=session_id,
            previous_session_id=previous_session_id,
            source=source,
            reason=reason,
            evidence=evidence,
        )
        .returning(models.ModelDeployment.id)
    ).scalar_one()


def rollback(
    engine: sa.Engine, model_kind: str, symbol: str, *, to: int | None = None, source: str = "manual", reason: str = ""
) -> dict:
    """Deploy the previous model again (or ``to``): by default the newest earlier promoted model that was
    not itself rolled back from, so successive rollbacks walk back through the promotions."""
    if model_kind not in KINDS:
        raise ValidationError("kind", f"must be one of {', '.join(KINDS)}, got {model_kind!r}")
    with engine.begin() as conn:
        lock(conn, model_kind, symbol)
        current = deployed(conn, model_kind, symbol)
        if current is None:
            raise TrainsrvError(f"no {model_kind} model is deployed for {symbol}: nothing to roll back")
        target = (
            to
            if to is not None
            else conn.execute(
                queries.get("registry.rollback_target"),
                {"model_kind": model_kind, "symbol": symbol, "current": current.session_id},
            ).scalar()
        )
        if target is None:
            raise TrainsrvError(
                f"{current.version} is the only {model_kind} model ever promoted for {symbol}: nothing to roll back to"
            )
        entry = model(conn, target)
        if (entry["model_kind"], entry["symbol"]) != (model_kind, symbol):
            raise ValidationError("to", f"session {target} is a {entry['model_kind']} model of {entry['symbol']}")
        if target == current.session_id:
            raise ValidationError("to", f"session {target} is already deployed")
        deployment_id = record(
            conn,
            model_kind=model_kind,
            symbol=symbol,
            action="rollback",
            session_id=target,
            previous_session_id=current.session_id,
            source=source,
            reason=reason or f"rolled back from {current.version}",
            evidence={
                "replaced": {
                    "session_id": current.session_id,
                    "version": current.version,
                    "deployed_at": current.deployed_at.isoformat(),
                }
            },
        )
    return {
        "action": "rollback",
        "deployment_id": deployment_id,
        "session_id": target,
        "version": entry["version"],
        "previous_session_id": current.session_id,
    }
