"""``trainsrv sessions list | show | compare``: training sessions as ``mlflow runs`` shows runs.

Every figure comes from ``v_session_value`` (the formulas live in the view); ``compare`` also lists the
configuration keys whose values differ between the sessions."""

from __future__ import annotations

import json

import sqlalchemy as sa

from app import cli_common
from app.db import queries
from app.errors import TrainsrvError

LIST_COLUMNS = [
    ("session_id", "id", 5),
    ("model_kind", "kind", 4),
    ("symbol", "symbol", 10),
    ("status", "status", 11),
    ("started_at", "started", 19),
    ("duration_s", "dur s", 7),
    ("steps", "steps", 6),
    ("final_loss_raw", "loss", 8),
    ("training_value", "value", 6),
    ("eval_accuracy", "acc", 6),
    ("eval_baseline_accuracy", "base", 6),
    ("eval_total_profit", "profit", 8),
    ("beats_baseline", "beats", 5),
    ("gradient_bytes", "gradients", 9),
]
COMPARE_SKIP = {"metrics", "config"}


def register(sub) -> None:
    sessions = sub.add_parser("sessions", help="list, show and compare training sessions")
    cmds = sessions.add_subparsers(dest="sessions_command", required=True)
    ls = cmds.add_parser("list", help="sessions, newest first")
    ls.add_argument("--kind", choices=["cnn", "rl"])
    ls.add_argument("--status", choices=["running", "succeeded", "failed", "interrupted"])
    ls.add_argument("--limit", type=cli_common.positive_int, default=20)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=_list)
    show = cmds.add_parser("show", help="one session: value, evaluation, storage, configuration")
    show.add_argument("session_id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=_show)
    compare = cmds.add_parser("compare", help="sessions side by side, and the configuration keys that differ")
    compare.add_argument("session_ids", type=int, nargs="+", help="two or more session ids")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(func=_compare)


def list_sessions(
    conn: sa.Connection, kind: str | None = None, status: str | None = None, limit: int = 20
) -> list[dict]:
    rows = conn.execute(queries.get("sessions.list"), {"kind": kind, "status": status, "limit": limit}).mappings()
    return [dict(r) for r in rows]


def get_sessions(conn: sa.Connection, ids: list[int]) -> list[dict]:
    """The sessions ``ids`` in that order; an unknown id is an error."""
    rows = [dict(r) for r in conn.execute(queries.get("sessions.show"), {"ids": ids}).mappings()]
    missing = sorted(set(ids) - {r["session_id"] for r in rows})
    if missing:
        raise TrainsrvError(f"no training session {', '.join(map(str, missing))}")
    return rows


def config_differences(sessions: list[dict]) -> dict[str, list]:
    """Flattened configuration keys whose values differ between the sessions (key -> value per session)."""
    flat = [_flatten(s["config"] or {}) for s in sessions]
    keys = sorted(set().union(*flat))
    return {k: [f.get(k) for f in flat] for k in keys if len({json.dumps(f.get(k), default=str) for f in flat}) > 1}


def _flatten(mapping: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, list) and len(value) > 8:
            out[f"{prefix}{key}"] = f"{len(value)} values"
        else:
            out[f"{prefix}{key}"] = value
    return out


def _list(args) -> int:
    with cli_common.open_db().connect() as conn:
        rows = list_sessions(conn, args.kind, args.status, args.limit)
    if args.json:
        _print_json(rows)
        return 0
    print(" ".join(f"{title:>{width}}" for _, title, width in LIST_COLUMNS))
    for row in rows:
        print(" ".join(f"{_cell(key, row[key]):>{width}}" for key, _, width in LIST_COLUMNS))
    if not rows:
        print("(no training sessions)")
    return 0


def _show(args) -> int:
    with cli_common.open_db().connect() as conn:
        (session,) = get_sessions(conn, [args.session_id])
    if args.json:
        _print_json(session)
        return 0
    for key, value in session.items():
        if key not in COMPARE_SKIP:
            print(f"{key:<28} {_cell(key, value)}")
    print("\nconfiguration")
    for key, value in _flatten(session["config"] or {}).items():
        print(f"  {key:<34} {_cell(key, value)}")
    return 0


def _compare(args) -> int:
    if len(set(args.session_ids)) < 2:
        raise TrainsrvError("compare needs at least two different session ids")
    with cli_common.open_db().connect() as conn:
        sessions = get_sessions(conn, args.session_ids)
    differences = config_differences(sessions)
    if args.json:
        _print_json(
            {
                "sessions": [{k: v for k, v in s.items() if k not in COMPARE_SKIP} for s in sessions],
                "config_differences": differences,
            }
        )
        return 0
    width = max(14, *(len(_cell(k, s[k])) for s in sessions for k in s if k not in COMPARE_SKIP))
    width = min(width, 28)
    for key in (k for k in sessions[0] if k not in COMPARE_SKIP):
        print(f"{key:<30} " + " ".join(f"{_cell(key, s[key])[:width]:>{width}}" for s in sessions))
    print("\nconfiguration differences" if differences else "\nsame configuration")
    for key, values in differences.items():
        print(f"  {key:<28} " + " ".join(f"{_cell(key, v)[:width]:>{width}}" for v in values))
    return 0


def _cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key == "gradient_bytes":
        return f"{value / 1e6:.1f} MB"
    if key.endswith("_s") and isinstance(value, float):
        return f"{value:.1f}"
    if key == "started_at" or key == "ended_at":
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _print_json(value) -> None:
    print(json.dumps(value, default=str, indent=2))
