"""The promotion gate: a candidate replaces the deployed model only on evidence.

On the candidate's own evaluation slice (the later episodes its session held out), the candidate and
the deployed model (the incumbent) are both re-evaluated now, with the same code and costs
(``evaluate.policy_metrics``). The candidate is promoted when every check passes:

* ``clean``: no model in the candidate's lineage trained on data ending after the slice's start
  (``model_contamination``); a contaminated slice proves nothing;
* ``enough_episodes``: the slice holds at least ``gate_min_eval_episodes`` episodes;
* ``profit_vs_baseline``: profit per call > best constant policy's (always long / short / hold) + margin;
* ``accuracy_vs_baseline``: accuracy - majority-baseline accuracy > ``gate_accuracy_margin``;
* ``profit_vs_deployed`` / ``accuracy_vs_deployed``: profit per call and accuracy > the incumbent's + the
  deployed margins (when one is deployed; a negative margin tolerates a slightly worse, fresher model).

Every decision, promotion or refusal, is a ``model_deployments`` row with the numbers (``evidence``).
``force`` (by hand only) promotes whatever the checks say, and records them.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from app.config import Settings, get_settings
from app.nets import inputs
from app.registry import lineage, loader, store
from app.trainer import episodes as episodes_mod
from app.trainer import evaluate, rl_holdout


@dataclasses.dataclass(frozen=True)
class Decision:
    action: str  # promote | refuse | none (already deployed)
    session_id: int
    version: str
    previous_session_id: int | None
    reason: str
    evidence: dict
    deployment_id: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def run(
    engine: sa.Engine, session_id: int, *, settings: Settings | None = None, source: str = "gate", force: bool = False
) -> Decision:
    """Decide on candidate ``session_id`` and record the decision (see the module docstring)."""
    settings = settings or get_settings()
    with engine.begin() as conn:
        candidate = store.model(conn, session_id)
        kind, symbol = candidate["model_kind"], candidate["symbol"]
        store.lock(conn, kind, symbol)
        current = store.deployed(conn, kind, symbol)
        if current is not None and current.session_id == session_id:
            return Decision("none", session_id, candidate["version"], session_id, "already deployed", {})
        evidence = _evidence(conn, candidate, current, settings)
        failed = [c["check"] for c in evidence["checks"] if not c["passed"]]
        promote = force or not failed
        reason = (
            "all checks passed"
            if not failed
            else f"forced by hand despite failed checks: {', '.join(failed)}"
            if force
            else f"failed checks: {', '.join(failed)}"
        )
        action = "promote" if promote else "refuse"
        deployment_id = store.record(
            conn,
            model_kind=kind,
            symbol=symbol,
            action=action,
            session_id=session_id,
            previous_session_id=current.session_id if current else None,
            source=source,
            reason=reason,
            evidence=evidence,
        )
    return Decision(
        action,
        session_id,
        candidate["version"],
        current.session_id if current else None,
        reason,
        evidence,
        deployment_id,
    )


def _evidence(conn: sa.Connection, candidate: dict, current, settings: Settings) -> dict:
    config = store.config(conn, candidate["session_id"])
    start, cost = config.get("eval_cutoff"), config.get("cost")
    if start is None or cost is None:  # an RL session from before its evaluation existed (migration 0015)
        return {
            "slice": None,
            "candidate": {"session_id": candidate["session_id"], "version": candidate["version"]},
            "incumbent": None,
            "checks": [{"check": "evaluation_slice", "passed": False, "value": None, "must_exceed": None}],
        }
    ids = config.get("eval_episode_ids") or []
    eps = (
        rl_holdout.episodes_by_id(conn, ids) if candidate["model_kind"] == "rl" else episodes_mod.still_valid(conn, ids)
    )
    cand = {
        **_metrics(conn, candidate["session_id"], eps, cost),
        "version": candidate["version"],
        "session_id": candidate["session_id"],
        **lineage.contamination(conn, candidate["session_id"], start),
    }
    incumbent = None
    if current is not None:
        incumbent = {
            **_metrics(conn, current.session_id, eps, cost),
            "version": current.version,
            "session_id": current.session_id,
            **lineage.contamination(conn, current.session_id, start),
        }
    return {
        "slice": {
            "from": start,
            "episodes": len(eps),
            "planned_episodes": len(config.get("eval_episode_ids") or []),
            "to": eps[-1].ts.isoformat() if eps else None,
            "cost": cost,
        },
        "candidate": cand,
        "incumbent": incumbent,
        "margins": {
            "profit": settings.gate_profit_margin,
            "accuracy": settings.gate_accuracy_margin,
            "deployed_profit": settings.gate_deployed_profit_margin,
            "deployed_accuracy": settings.gate_deployed_accuracy_margin,
            "min_eval_episodes": settings.gate_min_eval_episodes,
        },
        "checks": _checks(cand, incumbent, len(eps), settings),
    }


def _metrics(conn: sa.Connection, session_id: int, eps: list, cost: float) -> dict:
    if not eps:
        return {}
    model = loader.load(conn, session_id)
    x, _ = inputs.load_inputs(conn, [e.package_id for e in eps], model.input_spec)
    return evaluate.policy_metrics(model.calls(x), eps, cost)


def _checks(cand: dict, incumbent: dict | None, episodes: int, s: Settings) -> list[dict]:
    def check(name: str, value, threshold) -> dict:
        passed = value is not None and threshold is not None and value > threshold
        return {"check": name, "passed": passed, "value": value, "must_exceed": threshold}

    checks = [
        {"check": "clean", "passed": not cand["contaminated"], "value": cand["contaminated_by"], "must_exceed": None},
        {
            "check": "enough_episodes",
            "passed": episodes >= s.gate_min_eval_episodes,
            "value": episodes,
            "must_exceed": s.gate_min_eval_episodes - 1,
        },
    ]
    if not episodes:
        return checks
    edge = cand["accuracy"] - cand["baseline_accuracy"]
    checks += [
        check(
            "profit_vs_baseline",
            cand["mean_profit_per_call"],
            cand["best_constant_profit_per_call"] + s.gate_profit_margin,
        ),
        check("accuracy_vs_baseline", edge, s.gate_accuracy_margin),
    ]
    if incumbent is not None:
        checks += [
            check(
                "profit_vs_deployed",
                cand["mean_profit_per_call"],
                incumbent["mean_profit_per_call"] + s.gate_deployed_profit_margin,
            ),
            check("accuracy_vs_deployed", cand["accuracy"], incumbent["accuracy"] + s.gate_deployed_accuracy_margin),
        ]
    return checks
