"""Metrics of calls on an evaluation window, and the statistics over seeds and rounds (torch-free).

A long call earns ``price_return - cost``, a short ``-price_return - cost``, a hold 0 and is not a call;
``cost`` is the outcome labeller's round trip, ``2 * (fee_rate + slippage_rate)``. The paired bootstrap
resamples (seed, round) units — the same window seen by an arm and by the uniform arm of the same seed —
so the serial correlation inside a window stays inside its unit.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np

UNIFORM = {"cnn": "all", "rl": "uniform"}


def profit(call: str, price_return: float, cost: float) -> float:
    if call == "long":
        return price_return - cost
    if call == "short":
        return -price_return - cost
    return 0.0


def window_metrics(calls: list[str], price_returns: list[float], optimal: list[str], cost: float) -> dict:
    """Episodes, calls, total and per-call profit, hit rate, accuracy, majority baseline, hold share."""
    n = len(calls)
    if n == 0:
        return {
            "episodes": 0,
            "calls": 0,
            "total_profit": 0.0,
            "profit_per_call": None,
            "hit_rate": None,
            "accuracy": None,
            "baseline_accuracy": None,
            "hold_share": None,
        }
    profits = [profit(c, r, cost) for c, r in zip(calls, price_returns) if c != "hold"]
    return {
        "episodes": n,
        "calls": len(profits),
        "total_profit": float(sum(profits)),
        "profit_per_call": float(sum(profits) / len(profits)) if profits else None,
        "hit_rate": float(sum(p > 0 for p in profits) / len(profits)) if profits else None,
        "accuracy": sum(c == o for c, o in zip(calls, optimal)) / n,
        "baseline_accuracy": Counter(optimal).most_common(1)[0][1] / n,
        "hold_share": sum(c == "hold" for c in calls) / n,
    }


def _pooled(rows: list[dict]) -> float | None:
    calls = sum(r["calls"] for r in rows)
    return sum(r["total_profit"] for r in rows) / calls if calls else None


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None, None
    mean = float(np.mean(values))
    return mean, (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def arm_table(rows: list[dict]) -> list[dict]:
    """Per (family, arm, source): pooled profit per call, and mean ± sd over seeds of profit per call,
    hit rate and accuracy - baseline (each seed pooled over its rounds)."""
    groups: dict[tuple, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        groups[(r["family"], r["arm"], r["source"])][r["seed"]].append(r)
    out = []
    for (family, arm, source), by_seed in sorted(groups.items()):
        per_seed = []
        for seed_rows in by_seed.values():
            calls = sum(r["calls"] for r in seed_rows)
            hits = sum((r["hit_rate"] or 0) * r["calls"] for r in seed_rows)
            edges = [r["accuracy"] - r["baseline_accuracy"] for r in seed_rows if r["accuracy"] is not None]
            per_seed.append(
                {
                    "ppc": _pooled(seed_rows),
                    "hit": hits / calls if calls else None,
                    "edge": float(np.mean(edges)) if edges else None,
                    "calls": calls,
                    "episodes": sum(r["episodes"] for r in seed_rows),
                }
            )
        all_rows = [r for seed_rows in by_seed.values() for r in seed_rows]
        ppc, ppc_sd = _mean_sd([s["ppc"] for s in per_seed])
        hit, hit_sd = _mean_sd([s["hit"] for s in per_seed])
        edge, edge_sd = _mean_sd([s["edge"] for s in per_seed])
        out.append(
            {
                "family": family,
                "arm": arm,
                "source": source,
                "seeds": len(by_seed),
                "rounds": max(len(v) for v in by_seed.values()),
                "episodes": sum(s["episodes"] for s in per_seed),
                "calls": sum(s["calls"] for s in per_seed),
                "profit_per_call": _pooled(all_rows),
                "ppc_mean": ppc,
                "ppc_sd": ppc_sd,
                "hit_rate_mean": hit,
                "hit_rate_sd": hit_sd,
                "edge_mean": edge,
                "edge_sd": edge_sd,
            }
        )
    return out


def paired_bootstrap(
    arm_rows: list[dict], base_rows: list[dict], *, resamples: int = 5000, seed: int = 0, level: float = 0.95
) -> dict:
    """CI of (pooled profit per call of the arm) - (that of the base) over resampled (seed, round) units."""
    base = {(r["seed"], r["round"]): r for r in base_rows}
    units = [(r, base[(r["seed"], r["round"])]) for r in arm_rows if (r["seed"], r["round"]) in base]
    if not units:
        return {"units": 0, "diff": None, "low": None, "high": None, "p_le_0": None}
    a = np.array([[u[0]["total_profit"], u[0]["calls"], u[1]["total_profit"], u[1]["calls"]] for u in units])
    diff = _diff(a.sum(axis=0))
    diff = None if math.isnan(diff) else diff  # an arm that never called: no profit per call to compare
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(units), size=(resamples, len(units)))
    sums = a[idx].sum(axis=1)
    diffs = np.array([_diff(s) for s in sums])
    diffs = diffs[~np.isnan(diffs)]
    if not len(diffs):
        return {"units": len(units), "diff": diff, "low": None, "high": None, "p_le_0": None}
    tail = (1 - level) / 2
    return {
        "units": len(units),
        "diff": diff,
        "low": float(np.quantile(diffs, tail)),
        "high": float(np.quantile(diffs, 1 - tail)),
        "p_le_0": float(np.mean(diffs <= 0)),
    }


def _diff(s: np.ndarray) -> float:
    if s[1] <= 0 or s[3] <= 0:
        return float("nan")
    return float(s[0] / s[1] - s[2] / s[3])


def comparisons(rows: list[dict], source: str = "model", **kwargs) -> list[dict]:
    """Each arm's paired bootstrap against its family's uniform arm, on ``source`` rows."""
    out = []
    by_arm: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r["source"] == source:
            by_arm[(r["family"], r["arm"])].append(r)
    for (family, arm), arm_rows in sorted(by_arm.items()):
        base = by_arm.get((family, UNIFORM[family]))
        if arm == UNIFORM[family] or base is None:
            continue
        out.append(
            {"family": family, "arm": arm, "against": UNIFORM[family], **paired_bootstrap(arm_rows, base, **kwargs)}
        )
    return out
