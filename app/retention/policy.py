"""Which sessions keep their gradients, which lose them, and which lose their checkpoints too.

What must never be pruned is one SQL view, ``v_sessions_protected`` (sessions marked keep, running ones,
ones a replay is reading, and the lineage of all of those). On top of it the settings add policy:

* the newest ``gradient_keep_newest`` sessions of each (model kind, symbol) keep everything;
* older than ``checkpoint_max_age_days`` (0: never): gradients and checkpoints go (``all``);
* older than ``gradient_max_age_days`` (0: never): gradients go, checkpoints stay (``gradients``);
* then, while the gradients of the sessions left exceed ``gradient_budget_gb`` (0: no budget), the
  oldest of the remaining unprotected sessions lose their gradients.

Age counts from the session's end (its start while it has none). Nothing here changes the database:
``plan`` reads, ``app.retention.gc`` acts.
"""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from app.config import Settings
from app.db import queries

GB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Policy:
    """The retention settings (see the module docstring)."""

    keep_newest: int = 3
    gradient_max_age_days: float = 14.0
    checkpoint_max_age_days: float = 0.0
    budget_bytes: int = 0

    @classmethod
    def from_settings(cls, s: Settings) -> Policy:
        return cls(
            s.gradient_keep_newest, s.gradient_max_age_days, s.checkpoint_max_age_days, int(s.gradient_budget_gb * GB)
        )


@dataclasses.dataclass
class Decision:
    """One session: its class, and the pruning it is due (``action`` None: nothing to do)."""

    session_id: int
    model_kind: str
    symbol: str | None
    session_class: str
    reason: str
    gradient_bytes: int
    checkpoint_bytes: int
    age_days: float
    action: str | None = None


@dataclasses.dataclass
class Plan:
    """Every session's decision, and the gradient bytes before and after the planned pruning."""

    decisions: list[Decision]
    policy: Policy
    gradient_bytes: int

    @property
    def actions(self) -> list[Decision]:
        return [d for d in self.decisions if d.action is not None]

    @property
    def gradient_bytes_after(self) -> int:
        return self.gradient_bytes - sum(d.gradient_bytes for d in self.actions)

    def by_class(self) -> dict[str, dict]:
        """Sessions and bytes per class (after the plan when ``action`` is set: counted where they go)."""
        out: dict[str, dict] = {}
        for d in self.decisions:
            c = out.setdefault(d.session_class, {"sessions": 0, "gradient_bytes": 0, "checkpoint_bytes": 0})
            c["sessions"] += 1
            c["gradient_bytes"] += d.gradient_bytes
            c["checkpoint_bytes"] += d.checkpoint_bytes
        return out


def plan(conn: sa.Connection, policy: Policy) -> Plan:
    """What ``policy`` does to every session now (reads only)."""
    rows = conn.execute(queries.get("retention.sessions")).all()
    decisions = [_decide(r, policy) for r in rows]
    total = conn.execute(queries.get("retention.gradient_bytes")).scalar_one()
    _apply_budget(decisions, policy, total)
    return Plan(decisions, policy, total)


def _decide(r, p: Policy) -> Decision:
    d = Decision(
        r.session_id, r.model_kind, r.symbol, "", "", int(r.gradient_bytes), int(r.checkpoint_bytes), float(r.age_days)
    )
    if r.pruned == "all":
        d.session_class, d.reason = "pruned: all", "gradients and checkpoints pruned"
    elif r.protected:
        d.session_class, d.reason = "protected", r.protected
    elif r.newest_rank <= p.keep_newest:
        d.session_class, d.reason = "newest", f"among the newest {p.keep_newest} of {r.model_kind} {r.symbol}"
    elif p.checkpoint_max_age_days > 0 and d.age_days > p.checkpoint_max_age_days:
        d.session_class, d.action = "prunable", "all"
        d.reason = f"older than {p.checkpoint_max_age_days:g} days (checkpoint_max_age_days)"
    elif r.pruned == "gradients":
        d.session_class, d.reason = "pruned: gradients", "gradients pruned"
    elif p.gradient_max_age_days > 0 and d.age_days > p.gradient_max_age_days:
        d.session_class, d.action = "prunable", "gradients"
        d.reason = f"older than {p.gradient_max_age_days:g} days (gradient_max_age_days)"
    else:
        d.session_class, d.reason = "prunable", "kept while within the age limits and the budget"
    return d


def _apply_budget(decisions: list[Decision], p: Policy, total: int) -> None:
    """Oldest first, unprotected sessions not yet due lose their gradients until the rest fits the budget."""
    if p.budget_bytes <= 0:
        return
    left = total - sum(d.gradient_bytes for d in decisions if d.action is not None)
    for d in decisions:  # oldest first (the query's order)
        if left <= p.budget_bytes:
            return
        if d.session_class == "prunable" and d.action is None and d.gradient_bytes > 0:
            d.action = "gradients"
            d.reason = f"over the gradient budget of {p.budget_bytes / GB:g} GB (gradient_budget_gb)"
            left -= d.gradient_bytes
