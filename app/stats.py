"""``trainsrv stats``: integration statistics, per-table health (``v_system_stats``) and storage per
retention class with the gradient budget's headroom (``app.retention``)."""

from __future__ import annotations

import json

import sqlalchemy as sa

from app import cli_common
from app.config import get_settings
from app.db import queries
from app.retention import commands as retention_commands
from app.retention import policy


def system_stats(conn: sa.Connection) -> list[dict]:
    """One dict per table: row_count, total_bytes, dead_rows, vacuum / analyze times, health."""
    rows = conn.execute(queries.get("stats.system_stats")).mappings()
    return [dict(r) for r in rows]


def integration_stats(conn: sa.Connection) -> dict:
    """Packages, validity and completeness, outcome validation rate, profitable share,
    experiences, sessions, queue depth and storage used by gradients / checkpoints."""
    return dict(conn.execute(queries.get("stats.integration")).mappings().one())


def retention_stats(conn: sa.Connection) -> dict:
    """Sessions and bytes per retention class (protected, newest, prunable, pruned), the gradient bytes,
    the budget and its headroom (None without a budget), and how many sessions gc would prune now."""
    rules = policy.Policy.from_settings(get_settings())
    plan = policy.plan(conn, rules)
    headroom = rules.budget_bytes - plan.gradient_bytes if rules.budget_bytes > 0 else None
    return {
        "by_class": plan.by_class(),
        "gradient_bytes": plan.gradient_bytes,
        "budget_bytes": rules.budget_bytes,
        "headroom_bytes": headroom,
        "due_now": len(plan.actions),
    }


def register(sub) -> None:
    p = sub.add_parser("stats", help="integration statistics and per-table health")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_stats)


def _stats(args) -> int:
    with cli_common.open_db().connect() as conn:
        summary, tables, retention = integration_stats(conn), system_stats(conn), retention_stats(conn)
    if args.json:
        print(json.dumps({"summary": summary, "tables": tables, "retention": retention}, default=str, indent=2))
        return 0
    for key, value in summary.items():
        shown = f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else value)
        print(f"{key:<26} {shown}")
    print()
    print(f"{'table':<20} {'rows':>12} {'bytes':>14}  health")
    for t in tables:
        print(f"{t['table_name']:<20} {t['row_count']:>12} {t['total_bytes']:>14}  {t['health']}")
    print()
    print(
        retention_commands.storage_lines(retention["by_class"], retention["gradient_bytes"], retention["budget_bytes"])
    )
    print(f"sessions gc would prune now: {retention['due_now']}")
    return 0
