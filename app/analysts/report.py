"""``trainsrv report``: PNG plots of one session (losses, gradient norm, batch profitability,
out-of-sample results) and an HTML page that shows them."""

from __future__ import annotations

import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from app.db import queries  # noqa: E402
from app.errors import TrainsrvError  # noqa: E402

EVALUATION_KEYS = ("evaluation", "out_of_sample", "oos")


def write_report(conn: sa.Connection, session_id: int, out: Path) -> Path:
    """Write the plots and ``index.html`` for ``session_id`` into ``out``; returns the page's path."""
    session = conn.execute(queries.get("analysts.report_session"), {"session_id": session_id}).mappings().first()
    if session is None:
        raise TrainsrvError(f"training session {session_id} does not exist")
    steps = [dict(r) for r in conn.execute(queries.get("analysts.report_steps"), {"session_id": session_id}).mappings()]
    if not steps:
        raise TrainsrvError(f"training session {session_id} has no recorded steps to plot")
    out.mkdir(parents=True, exist_ok=True)
    images = [
        _plot_series(out / "losses.png", "Loss components", steps, "loss_components", extra={"total": "loss_total"}),
        _plot_grad_norm(out / "grad_norm.png", steps),
        _plot_series(out / "batch_profitability.png", "Batch profitability", steps, "batch_profitability"),
        _plot_evaluation(out / "evaluation.png", dict(session["metrics"] or {})),
    ]
    index = out / "index.html"
    index.write_text(_page(dict(session), [img for img in images if img is not None]))
    return index


def _numeric_items(mapping: dict) -> dict[str, float]:
    return {k: float(v) for k, v in (mapping or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _plot_series(path: Path, title: str, steps: list[dict], column: str, extra: dict | None = None) -> Path:
    x = [s["step"] for s in steps]
    series: dict[str, list[float]] = {name: [s[col] for s in steps] for name, col in (extra or {}).items()}
    keys = sorted({k for s in steps for k in _numeric_items(s[column])})
    for key in keys:
        series[key] = [_numeric_items(s[column]).get(key, float("nan")) for s in steps]
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, values in series.items():
        ax.plot(x, values, label=name, linewidth=1)
    ax.set(title=title, xlabel="step")
    if series:
        ax.legend(fontsize="small")
    return _save(fig, path)


def _plot_grad_norm(path: Path, steps: list[dict]) -> Path:
    x = [s["step"] for s in steps]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(x, [s["grad_norm"] if s["grad_norm"] is not None else float("nan") for s in steps], label="grad norm")
    ax.set(title="Gradient norm and learning rate", xlabel="step", ylabel="L2 norm")
    lr = ax.twinx()
    lr.plot(x, [s["learning_rate"] for s in steps], color="tab:orange", linewidth=1, label="learning rate")
    lr.set_ylabel("learning rate")
    return _save(fig, path)


def _plot_evaluation(path: Path, metrics: dict) -> Path | None:
    section = next((metrics[k] for k in EVALUATION_KEYS if isinstance(metrics.get(k), dict)), None)
    values = _numeric_items(section or {})
    if not values:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(list(values), list(values.values()), color="tab:green")
    ax.set(title="Out-of-sample evaluation (chronologically later slice)")
    ax.tick_params(axis="x", labelrotation=30)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _page(session: dict, images: list[Path]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
                   for k, v in session.items() if k not in ("metrics", "config"))
    figures = "".join(f'<figure><img src="{p.name}" alt="{p.stem}"><figcaption>{p.stem}</figcaption></figure>'
                      for p in images)
    blobs = "".join(f"<h2>{k}</h2><pre>{html.escape(json.dumps(session[k], indent=2, default=str))}</pre>"
                    for k in ("metrics", "config"))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>trainsrv session {session['id']}</title>"
            "<style>body{font-family:sans-serif;margin:2em}th{text-align:left;padding-right:1em}"
            "img{max-width:100%}</style></head>"
            f"<body><h1>Training session {session['id']}</h1><table>{rows}</table>{figures}{blobs}</body></html>")


def _fmt(value) -> str:
    return "-" if value is None else str(value)
