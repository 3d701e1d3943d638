"""Statistics of the walk-forward experiment (no database)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from app.experiments import stats

COST = 0.001


def _row(arm, seed, rnd, total, calls, family="cnn", source="model", acc=0.5, base=0.4, hit=0.5):
    return {
        "family": family,
        "arm": arm,
        "seed": seed,
        "round": rnd,
        "source": source,
        "total_profit": total,
        "calls": calls,
        "episodes": max(calls, 1),
        "hit_rate": hit if calls else None,
        "accuracy": acc,
        "baseline_accuracy": base,
        "leakage_rows": 0,
    }


def test_window_metrics_price_calls_after_costs_and_holds_earn_nothing():
    m = stats.window_metrics(["long", "short", "hold"], [0.01, 0.01, -0.05], ["long", "long", "hold"], COST)
    assert m["calls"] == 2 and m["episodes"] == 3
    assert math.isclose(m["total_profit"], (0.01 - COST) + (-0.01 - COST))
    assert m["hit_rate"] == 0.5
    assert math.isclose(m["accuracy"], 2 / 3) and math.isclose(m["baseline_accuracy"], 2 / 3)
    assert math.isclose(m["hold_share"], 1 / 3)
    none = stats.window_metrics(["hold"] * 3, [0.01, 0.02, 0.03], ["long"] * 3, COST)
    assert none["calls"] == 0 and none["total_profit"] == 0 and none["profit_per_call"] is None


def test_arm_table_pools_rounds_per_seed_then_mean_and_sd_over_seeds():
    rows = [
        _row("all", 0, 1, 0.002, 2),
        _row("all", 0, 2, 0.0, 2),
        _row("all", 1, 1, 0.004, 2),
        _row("all", 1, 2, 0.004, 2),
    ]
    (arm,) = stats.arm_table(rows)
    assert arm["seeds"] == 2 and arm["rounds"] == 2 and arm["calls"] == 8
    assert math.isclose(arm["ppc_mean"], (0.0005 + 0.002) / 2)
    assert math.isclose(arm["ppc_sd"], 0.0015 / math.sqrt(2))
    assert math.isclose(arm["profit_per_call"], 0.010 / 8)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-0.01, 0.01), st.integers(1, 30)), min_size=2, max_size=12), st.floats(0.0001, 0.002)
)
def test_bootstrap_of_an_arm_shifted_by_a_constant_recovers_the_shift(units, shift):
    base = [_row("all", i % 3, i, p * c, c) for i, (p, c) in enumerate(units)]
    arm = [_row("priority", i % 3, i, (p + shift) * c, c) for i, (p, c) in enumerate(units)]
    result = stats.paired_bootstrap(arm, base, resamples=300)
    assert result["units"] == len(units)
    # Every resample pools the same units for both arms, so the difference is the shift exactly.
    assert math.isclose(result["diff"], shift, rel_tol=1e-6, abs_tol=1e-12)
    assert result["low"] <= shift + 1e-12 and result["high"] >= shift - 1e-12
    assert result["p_le_0"] == 0.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-0.01, 0.01), st.floats(-0.01, 0.01), st.integers(1, 30)), min_size=1, max_size=12))
def test_bootstrap_interval_contains_the_point_difference_and_is_antisymmetric(units):
    a = [_row("profitable", 0, i, p * c, c) for i, (p, _, c) in enumerate(units)]
    b = [_row("all", 0, i, q * c, c) for i, (_, q, c) in enumerate(units)]
    ab, ba = stats.paired_bootstrap(a, b, resamples=400, seed=1), stats.paired_bootstrap(b, a, resamples=400, seed=1)
    assert ab["low"] - 1e-12 <= ab["diff"] <= ab["high"] + 1e-12 or len(units) == 1
    assert math.isclose(ab["diff"], -ba["diff"], abs_tol=1e-12)
    assert math.isclose(ab["low"], -ba["high"], abs_tol=1e-12)


def test_comparisons_pair_each_arm_with_its_familys_uniform_arm_only_on_shared_windows():
    rows = [
        _row("all", 0, 1, 0.001, 1),
        _row("profitable", 0, 1, 0.003, 1),
        _row("profitable", 1, 1, 0.5, 1),
        _row("uniform", 0, 1, 0.0, 1, family="rl"),
        _row("per", 0, 1, -0.002, 1, family="rl"),
    ]
    comps = {(c["family"], c["arm"]): c for c in stats.comparisons(rows, resamples=50)}
    assert set(comps) == {("cnn", "profitable"), ("rl", "per")}
    assert comps[("cnn", "profitable")]["units"] == 1  # seed 1 has no uniform window to pair with
    assert math.isclose(comps[("cnn", "profitable")]["diff"], 0.002)
    assert math.isclose(comps[("rl", "per")]["diff"], -0.002)


def test_an_arm_that_never_calls_has_no_difference_rather_than_nan():
    base = [_row("all", 0, 1, 0.002, 2), _row("all", 0, 2, 0.001, 1)]
    silent = [_row("profitable", 0, 1, 0.0, 0), _row("profitable", 0, 2, 0.0, 0)]
    result = stats.paired_bootstrap(silent, base, resamples=50)
    assert result["diff"] is None and result["low"] is None and result["units"] == 2
