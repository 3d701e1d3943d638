"""``trainsrv report``: PNG plots of one session and an HTML page a person reads.

One quantity per axis: every series gets its own panel (losses, gradient norm, learning rate, batch
shares, batch profit), with the session, model and symbol in the title and the unit on the y axis.
The evaluation plot puts the model beside its baseline (accuracy: always calling the slice's most
frequent optimal action; profit: always holding, which earns zero). The page is a summary table,
the evaluation against the baseline, the figures and the configuration as a table (long id lists
are counted, not dumped)."""

from __future__ import annotations

import datetime as dt
import html
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from matplotlib.ticker import PercentFormatter  # noqa: E402

from app.db import queries  # noqa: E402
from app.errors import TrainsrvError  # noqa: E402

EVALUATION_KEYS = ("evaluation", "out_of_sample", "oos")
PERCENT = PercentFormatter(xmax=1.0)
MAX_LIST_SHOWN = 8


def write_report(conn: sa.Connection, session_id: int, out: Path) -> Path:
    """Write the plots and ``index.html`` for ``session_id`` into ``out``; returns the page's path."""
    session = conn.execute(queries.get("analysts.report_session"), {"session_id": session_id}).mappings().first()
    if session is None:
        raise TrainsrvError(f"training session {session_id} does not exist")
    steps = [dict(r) for r in conn.execute(queries.get("analysts.report_steps"), {"session_id": session_id}).mappings()]
    if not steps:
        raise TrainsrvError(f"training session {session_id} has no recorded steps to plot")
    session = dict(session)
    out.mkdir(parents=True, exist_ok=True)
    label = _label(session)
    evaluation = _evaluation(session)
    figures = [
        (
            _plot_losses(out / "losses.png", label, steps),
            "Loss per step: the total and each component, each on its own axis.",
        ),
        (
            _plot_optimizer(out / "grad_norm.png", label, steps),
            "Gradient L2 norm (before clipping) and the learning rate the optimizer used.",
        ),
        (
            _plot_batches(out / "batch_profitability.png", label, steps),
            "What each training batch was made of: shares of profitable episodes and their realised profit.",
        ),
        (
            _plot_evaluation(out / "evaluation.png", label, evaluation),
            "Out-of-sample evaluation on the chronologically later slice, against the baselines.",
        ),
    ]
    index = out / "index.html"
    index.write_text(_page(session, steps, evaluation, [(p, c) for p, c in figures if p is not None]))
    return index


def _label(session: dict) -> str:
    symbol = (session.get("config") or {}).get("symbol")
    parts = [f"Training session {session['id']}", session["model_kind"], symbol]
    return " · ".join(str(p) for p in parts if p)


def _evaluation(session: dict) -> dict:
    metrics = session.get("metrics") or {}
    section = next((metrics[k] for k in EVALUATION_KEYS if isinstance(metrics.get(k), dict)), None)
    return dict(section or {})


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _series(steps: list[dict], column: str) -> dict[str, list[float]]:
    keys = sorted({k for s in steps for k, v in (s[column] or {}).items() if _number(v) is not None})
    return {
        k: [
            _number((s[column] or {}).get(k)) if _number((s[column] or {}).get(k)) is not None else math.nan
            for s in steps
        ]
        for k in keys
    }


def _panels(path: Path, title: str, x: list[int], series: list[tuple[str, list[float], str, bool]]) -> Path | None:
    """One panel per (name, values, y label, percent?) sharing the step axis."""
    series = [s for s in series if any(not math.isnan(v) for v in s[1])]
    if not series:
        return None
    cols = 1 if len(series) <= 2 else 2
    rows = math.ceil(len(series) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 2.6 * rows + 0.6), sharex=True, squeeze=False)
    for ax, (name, values, unit, percent) in zip(axes.flat, series, strict=False):
        ax.plot(x, values, linewidth=1.2, color="tab:blue")
        ax.set_title(name, fontsize="medium")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        if percent:
            ax.yaxis.set_major_formatter(PERCENT)
    for ax in list(axes.flat)[len(series) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("training step")
    fig.suptitle(title)
    return _save(fig, path)


def _plot_losses(path: Path, label: str, steps: list[dict]) -> Path | None:
    x = [s["step"] for s in steps]
    series = [("total loss", [_nan(s["loss_total"]) for s in steps], "loss", False)]
    components = _series(steps, "loss_components").items()
    series += [(name, values, _component_unit(name), False) for name, values in components]
    return _panels(path, f"{label}: losses", x, series)


def _component_unit(name: str) -> str:
    """The y label of a loss component: most are losses; the RL agent also records Q-value diagnostics."""
    if name.startswith("abs_td"):
        return "|TD error|"
    if name.startswith("q_") or name.startswith("target"):
        return "Q value"
    return "loss"


def _plot_optimizer(path: Path, label: str, steps: list[dict]) -> Path | None:
    x = [s["step"] for s in steps]
    return _panels(
        path,
        f"{label}: gradient norm and learning rate",
        x,
        [
            ("gradient norm", [_nan(s["grad_norm"]) for s in steps], "L2 norm", False),
            ("learning rate", [_nan(s["learning_rate"]) for s in steps], "learning rate", False),
        ],
    )


def _plot_batches(path: Path, label: str, steps: list[dict]) -> Path | None:
    x = [s["step"] for s in steps]
    series = []
    for name, values in _series(steps, "batch_profitability").items():
        if "share" in name:
            series.append((name.replace("_", " "), values, "share of the batch", True))
        elif "profit" in name:
            series.append((name.replace("_", " "), values, "profit (% of entry price)", True))
        else:
            series.append((name.replace("_", " "), values, "value", False))
    return _panels(path, f"{label}: training batches", x, series)


def _plot_evaluation(path: Path, label: str, evaluation: dict) -> Path | None:
    accuracy, baseline = _number(evaluation.get("accuracy")), _number(evaluation.get("baseline_accuracy"))
    profit = _number(evaluation.get("total_profit", evaluation.get("mean_profit")))
    if accuracy is None and profit is None:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if accuracy is not None:
        names, values = ["model"], [accuracy]
        if baseline is not None:
            names.append("baseline\n(most frequent action)")
            values.append(baseline)
        _bars(left, names, values, ["tab:blue", "tab:gray"])
        verdict = "" if baseline is None else f" ({100 * (accuracy - baseline):+.1f} pp vs baseline)"
        left.set_title(f"Accuracy{verdict}", fontsize="medium")
        left.set_ylabel("share of calls matching the optimal action")
        left.set_ylim(0, 1)
    else:
        left.set_visible(False)
    if profit is not None:
        name = "total profit" if "total_profit" in evaluation else "mean profit"
        _bars(
            right,
            ["model", "baseline\n(always hold)"],
            [profit, 0.0],
            ["tab:green" if profit > 0 else "tab:red", "tab:gray"],
        )
        right.set_title(f"{name.capitalize()} after costs", fontsize="medium")
        right.set_ylabel("profit (% of entry price)")
        right.axhline(0, color="black", linewidth=0.8)
    else:
        right.set_visible(False)
    episodes = evaluation.get("episodes")
    fig.suptitle(f"{label}: out-of-sample evaluation" + (f" ({episodes} episodes)" if episodes else ""))
    return _save(fig, path)


def _bars(ax, names: list[str], values: list[float], colors: list[str]) -> None:
    bars = ax.bar(names, values, color=colors[: len(values)], width=0.6)
    ax.bar_label(bars, labels=[f"{100 * v:.2f} %" for v in values], padding=2)
    ax.yaxis.set_major_formatter(PERCENT)
    ax.grid(axis="y", alpha=0.3)
    low, high = min(0.0, *values), max(0.0, *values)
    pad = (high - low) * 0.15 or 0.001
    ax.set_ylim(low - (pad if low < 0 else 0), high + pad)


def _nan(value) -> float:
    return math.nan if value is None else float(value)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# -- the page --------------------------------------------------------------------------------------------------

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{padding:0.25em 0.8em;border-bottom:1px solid #ddd;"
    "text-align:left;vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "img{max-width:100%;border:1px solid #eee}figure{margin:1.5em 0}figcaption{color:#555}"
    ".good{color:#1a7f37}.bad{color:#b42318}"
)


def _page(session: dict, steps: list[dict], evaluation: dict, figures: list[tuple[Path, str]]) -> str:
    label = html.escape(_label(session))
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{label}</title><style>{STYLE}</style>"
        f"</head><body><h1>{label}</h1>",
        _verdict(session, evaluation),
        "<h2>Summary</h2>",
        _table(_summary_rows(session, steps)),
    ]
    if evaluation:
        parts += ["<h2>Out-of-sample evaluation</h2>", _evaluation_table(evaluation)]
    for path, caption in figures:
        parts.append(
            f'<figure><img src="{path.name}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    other = {k: v for k, v in (session.get("metrics") or {}).items() if k not in EVALUATION_KEYS}
    if other:
        parts += ["<h2>Other metrics</h2>", _table(_flatten(other))]
    if session.get("config"):
        parts += ["<h2>Configuration</h2>", _table(_flatten(session["config"]))]
    parts.append("</body></html>")
    return "\n".join(parts)


def _verdict(session: dict, evaluation: dict) -> str:
    accuracy, baseline = _number(evaluation.get("accuracy")), _number(evaluation.get("baseline_accuracy"))
    profit = _number(evaluation.get("total_profit"))
    if accuracy is None or baseline is None or profit is None:
        return "<p>No out-of-sample evaluation against a baseline was recorded for this session.</p>"
    beats = accuracy > baseline and profit > 0
    css, word = ("good", "beats") if beats else ("bad", "does not beat")
    return (
        f"<p class='{css}'><strong>The model {word} its baseline</strong>: accuracy {_pct(accuracy)} vs "
        f"{_pct(baseline)} for always calling the most frequent action, total profit {_pct(profit)} after costs "
        f"vs 0 for always holding.</p>"
    )


def _summary_rows(session: dict, steps: list[dict]) -> list[tuple[str, str]]:
    started, ended = session.get("started_at"), session.get("ended_at")
    duration = f"{(ended - started).total_seconds():.1f} s" if started and ended else "-"
    last = steps[-1]
    return [
        ("model", f"{session['model_kind']} ({session['model_name']})"),
        ("status", session["status"]),
        ("device", session["device"]),
        ("started", _fmt(started)),
        ("duration", duration),
        ("steps", f"{len(steps)} (last step {last['step']})"),
        (
            "loss",
            f"first {_fmt(steps[0]['loss_total'])}, final {_fmt(last['loss_total'])}, "
            f"best {_fmt(session.get('best_loss'))}",
        ),
        ("converged", _fmt(session.get("converged"))),
        ("training value", f"{_fmt(session.get('training_value'))} (0..1, 0.5 = no evidence of skill)"),
        ("gradient capture", f"{session['capture_policy']}, replay exact: {_fmt(session['replay_exact'])}"),
        ("seed / torch", f"{session['seed']} / {session['torch_version']}"),
    ]


def _evaluation_table(evaluation: dict) -> str:
    rows = []
    for key, value in evaluation.items():
        number = _number(value)
        if (
            key in ("accuracy", "baseline_accuracy", "hit_rate", "total_profit", "mean_profit_per_call", "mean_profit")
            and number is not None
        ):
            rows.append((key.replace("_", " "), _pct(number)))
        else:
            rows.append((key.replace("_", " "), _fmt(value)))
    return _table(rows)


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten(value, f"{name}.")
        elif isinstance(value, list) and len(value) > MAX_LIST_SHOWN:
            rows.append((name, f"{len(value)} values ({_fmt(value[0])} … {_fmt(value[-1])})"))
        else:
            rows.append((name, _fmt(value)))
    return rows


def _table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S %Z")
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return str(value)
