"""The experiment report: a markdown summary (tables of the arms, the comparisons, the baselines) and
two plots (profit per call by arm with the spread over seeds; cumulative profit by round)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from app.experiments import stats


def _bp(x) -> str:
    """A fraction of the price in basis points."""
    return "-" if x is None else f"{x * 1e4:+.2f}"


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _share(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _pp(x) -> str:
    return "-" if x is None else f"{100 * x:+.1f} pp"


def markdown(experiment: dict, rows: list[dict]) -> str:
    cfg = experiment["config"]
    arms = stats.arm_table(rows)
    lines = [
        f"# Walk-forward experiment {experiment['id']}: {experiment['series']} ({experiment['symbol']})",
        "",
        f"{cfg['bars']} one-minute bars, {cfg['decisions']} decisions every {cfg['every_min']} min, horizon "
        f"{cfg['horizon_s']} s, warm-up {cfg['warmup_days']} days then {cfg['rounds']} rounds; "
        f"{cfg['seeds']} seeds; round-trip cost {2 * (cfg['fee_rate'] + cfg['slippage_rate']) * 1e4:.1f} bp. "
        f"Status {experiment['status']}, {experiment['started_at']:%Y-%m-%d %H:%M} UTC"
        + (f" to {experiment['ended_at']:%H:%M}" if experiment.get("ended_at") else "")
        + f"; machine {cfg.get('machine')}.",
        "",
        "Profit is per call after costs, in basis points of the price; ± is the sample standard deviation "
        "over seeds (each seed pooled over its rounds). Accuracy − baseline: accuracy of the calls against "
        "the optimal action minus always calling the window's most frequent optimal action.",
        "",
    ]
    for family in ("cnn", "rl"):
        mine = [a for a in arms if a["family"] == family]
        if not mine:
            continue
        lines += [
            f"## {family.upper()}",
            "",
            "| arm | source | seeds | rounds | calls | profit/call (bp) | mean ± sd over seeds (bp) | hit rate | "
            "accuracy − baseline |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for a in mine:
            if a["source"] in ("no_trade", "always_long") and a["arm"] != stats.UNIFORM[family]:
                continue  # the same windows in every lane of a seed: shown once
            lines.append(
                f"| {a['arm'] if a['source'] in ('model', 'live') else '—'} | {a['source']} | {a['seeds']} | "
                f"{a['rounds']} | {a['calls']} | {_bp(a['profit_per_call'])} | {_bp(a['ppc_mean'])} ± "
                f"{_bp(a['ppc_sd'])} | {_pct(a['hit_rate_mean'])} | {_pp(a['edge_mean'])} ± "
                f"{_pp(a['edge_sd'])} |"
            )
        lines.append("")
        comps = [c for c in stats.comparisons(rows) if c["family"] == family]
        if comps:
            lines += [
                f"Paired bootstrap (5000 resamples of (seed, round) windows) of each arm's model against the "
                f"uniform arm `{stats.UNIFORM[family]}`, profit per call:",
                "",
                "| arm | windows | difference (bp) | 95 % CI (bp) | share of resamples ≤ 0 |",
                "|---|---|---|---|---|",
            ]
            for c in comps:
                lines.append(
                    f"| {c['arm']} | {c['units']} | {_bp(c['diff'])} | [{_bp(c['low'])}, {_bp(c['high'])}] | "
                    f"{_share(c['p_le_0'])} |"
                )
            lines.append("")
    leak = sum(r["leakage_rows"] for r in rows if r["source"] == "model")
    lines += [
        f"Leakage audit: {leak} rows over every lane (v_leakage_audit and each model's lineage against the "
        "window it is scored on).",
        "",
    ]
    return "\n".join(lines)


def plots(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    arms = [a for a in stats.arm_table(rows) if a["source"] in ("model", "no_trade", "always_long")]
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [f"{a['family']}/{a['arm']}" if a["source"] == "model" else f"{a['family']}/{a['source']}" for a in arms]
    seen, xs, ys, es = set(), [], [], []
    for label, a in zip(labels, arms):
        if label in seen:
            continue
        seen.add(label)
        xs.append(label)
        ys.append((a["ppc_mean"] or 0) * 1e4)
        es.append((a["ppc_sd"] or 0) * 1e4)
    ax.bar(
        xs,
        ys,
        yerr=es,
        capsize=4,
        color=[
            "tab:blue" if "/" in x and x.split("/")[1] not in ("no_trade", "always_long") else "tab:gray" for x in xs
        ],
    )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("profit per call after costs (bp)")
    ax.set_title("Out-of-sample profit per call: mean ± sd over seeds")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    paths.append(out / "arms.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    series = defaultdict(lambda: defaultdict(float))
    for r in rows:
        if r["source"] == "model" or (r["source"] == "always_long" and r["arm"] == stats.UNIFORM[r["family"]]):
            key = f"{r['family']}/{r['arm']}" if r["source"] == "model" else f"{r['family']}/always_long"
            series[key][r["round"]] += r["total_profit"] / max(1, _seeds(rows, r["family"], r["arm"]))
    for key, by_round in sorted(series.items()):
        rounds = sorted(by_round)
        total, ys = 0.0, []
        for k in rounds:
            total += by_round[k]
            ys.append(total * 100)
        ax.plot(rounds, ys, marker="o", label=key)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("round (window scored)")
    ax.set_ylabel("cumulative profit, % of price (mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out / "rounds.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _seeds(rows: list[dict], family: str, arm: str) -> int:
    return len({r["seed"] for r in rows if r["family"] == family and r["arm"] == arm})


def write(experiment: dict, rows: list[dict], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    images = plots(rows, out)
    text = markdown(experiment, rows) + "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in images) + "\n"
    (out / "report.md").write_text(text)
    return [out / "report.md", *images]
