"""The database sampler draws exactly in proportion to v_rl_replay's weights (chi-square), honours
the profitable share, and follows priority write-backs."""

import math
from collections import Counter

import numpy as np
import pytest
import sqlalchemy as sa

from app.errors import ValidationError
from app.rl_replay import buffer as rb
from app.rl_replay.batch import BetaSchedule, importance_weights
from app.stats import integration_stats

from .support import experience, package, small_replay

PRIORITIES = [0.05, 0.1, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 40.0]
PROFITABLE = [False, True, False, False, True, False, True, False, False, True, False, False]


def chi2_critical(df: int, z: float = 3.09) -> float:
    """Upper 0.1 % point of chi-square (Wilson-Hilferty; z = 3.09 is the normal 0.999 quantile)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2(counts: dict[int, int], probabilities: dict[int, float]) -> float:
    total = sum(counts.values())
    return sum((counts.get(i, 0) - total * p) ** 2 / (total * p) for i, p in probabilities.items())


def view_probabilities(engine, column: str = "sampling_probability") -> dict[int, float]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id, {column} FROM v_rl_replay WHERE {column} IS NOT NULL"))
        return {r[0]: r[1] for r in rows}


def draw_counts(buffer, batches: int, size: int, **kwargs) -> tuple[dict, dict]:
    """Counts of each id among all draws, and among the draws from the profitable stratum."""
    counts, profitable = {}, {}
    for _ in range(batches):
        batch = buffer.sample(size, **kwargs)
        for i, from_prof in zip(batch.ids.tolist(), batch.from_profitable.tolist()):
            target = profitable if from_prof else counts
            target[i] = target.get(i, 0) + 1
    return counts, profitable


@pytest.fixture
def replay(engine):
    ids = small_replay(engine, PRIORITIES, PROFITABLE)
    with engine.begin() as conn:
        invalid = experience(conn, 100.0, profitable=True, state=package(conn, valid=False))
        terminal = experience(conn, 4.0, done=True)
    return engine, ids + [terminal], invalid


def test_probabilities_in_the_view_follow_priority_alpha_and_profit_boost(replay):
    engine, ids, invalid = replay
    probs = view_probabilities(engine)
    assert set(probs) == set(ids)  # the invalid one is not replayable
    weights = [p**0.6 * (2.0 if f else 1.0) for p, f in zip(PRIORITIES + [4.0], PROFITABLE + [False])]
    expected = np.array(weights) / sum(weights)
    assert np.allclose([probs[i] for i in ids], expected, rtol=1e-12)


def test_frequencies_match_the_target_distribution(replay):
    engine, ids, invalid = replay
    buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=11)
    counts, _ = draw_counts(buffer, 300, 128, prioritize_profitable=False)
    probs = view_probabilities(engine)
    critical = chi2_critical(len(probs) - 1)
    assert invalid not in counts
    assert chi2(counts, probs) < critical
    # The test has power: the same draws are far from a uniform distribution.
    assert chi2(counts, {i: 1 / len(probs) for i in probs}) > 10 * critical


def test_profitable_share_is_drawn_from_the_profitable_distribution(replay):
    engine, ids, _ = replay
    buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=12, profitable_share=0.25)
    counts, profitable = draw_counts(buffer, 200, 128)
    assert sum(profitable.values()) == 200 * 32
    assert chi2(profitable, view_probabilities(engine, "profitable_probability")) < chi2_critical(3)
    assert chi2(counts, view_probabilities(engine)) < chi2_critical(len(ids) - 1)


def test_batch_carries_mixture_probabilities_and_normalised_weights(replay):
    engine, ids, _ = replay
    buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=13, profitable_share=0.5)
    batch = buffer.sample(64, beta=0.7)
    p_all, p_prof = view_probabilities(engine), view_probabilities(engine, "profitable_probability")
    expected = [0.5 * p_prof.get(i, 0.0) + 0.5 * p_all[i] for i in batch.ids.tolist()]
    assert np.allclose(batch.probabilities, expected, rtol=1e-12)
    raw = (len(ids) * np.array(expected)) ** -0.7
    assert np.allclose(batch.weights, raw / raw.max(), rtol=1e-6)
    assert batch.weights.max() == pytest.approx(1.0) and batch.replay_size == len(ids)
    assert batch.from_profitable.sum() == 32 and batch.is_profitable[batch.from_profitable].all()


def sampling_counts(engine, source: str) -> dict[int, tuple[int, object]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT id, times_sampled, last_sampled_at FROM {source}"))
        return {r[0]: (r[1], r[2]) for r in rows}


def priorities(engine, source: str, ids) -> dict[int, float]:
    with engine.connect() as conn:
        return dict(
            conn.execute(sa.text(f"SELECT id, priority FROM {source} WHERE id = ANY(:ids)"), {"ids": list(ids)}).all()
        )


def test_sampling_counts_are_kept(replay):
    engine, ids, _ = replay
    buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=14)
    first, second = buffer.sample(50), buffer.sample(30)
    drawn = Counter(first.ids.tolist() + second.ids.tolist())
    # Exact at once in the views ...
    pending = sampling_counts(engine, "v_rl_replay")
    assert {i: n for i, (n, _) in pending.items() if n} == dict(drawn)
    assert all((last is not None) == (i in drawn) for i, (_, last) in pending.items())
    assert all(n == 0 for n, _ in sampling_counts(engine, "experiences").values())
    # ... a write-back leaves them logged ...
    buffer.update_priorities(first.ids[:3], np.ones(3))
    assert all(n == 0 for n, _ in sampling_counts(engine, "experiences").values())
    assert sampling_counts(engine, "v_rl_replay") == pending
    # ... and closing the buffer folds both batches into experiences; the views do not change.
    buffer.close()
    folded = sampling_counts(engine, "experiences")
    assert {i: n for i, (n, _) in folded.items() if n} == dict(drawn)
    assert sampling_counts(engine, "v_rl_replay") == pending
    assert rb.pending(engine) == {"write_backs": 0, "batches": 0}


def test_draws_never_written_back_are_folded_on_demand(replay):
    engine, ids, _ = replay
    batch = rb.ProfitWeightedExperienceBuffer(engine, seed=17).sample(40)
    assert rb.pending(engine) == {"write_backs": 0, "batches": 1}
    with engine.connect() as conn:  # what `trainsrv stats` shows ops
        summary = integration_stats(conn)
    assert (summary["rl_unfolded_write_backs"], summary["rl_unfolded_batches"]) == (0, 1)
    assert rb.fold(engine) == 1
    folded = sampling_counts(engine, "experiences")
    assert {i: n for i, (n, _) in folded.items() if n} == dict(Counter(batch.ids.tolist()))
    assert rb.fold(engine) == 0


def test_same_seed_same_batch(replay):
    engine, ids, _ = replay
    a = rb.ProfitWeightedExperienceBuffer(engine, seed=19).sample(64)
    b = rb.ProfitWeightedExperienceBuffer(engine, seed=19).sample(64)
    c = rb.ProfitWeightedExperienceBuffer(engine, seed=20).sample(64)
    assert a.ids.tolist() == b.ids.tolist() and np.array_equal(a.probabilities, b.probabilities)
    assert a.ids.tolist() != c.ids.tolist()


def test_priority_updates_change_what_is_sampled(replay):
    engine, ids, _ = replay
    buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=15)
    rare = ids[0]  # priority 0.05: about 1 % of draws
    before, _ = draw_counts(buffer, 40, 128, prioritize_profitable=False)
    assert buffer.update_priorities([rare, ids[-2]], [500.0, 1e-3]) == 2
    after, _ = draw_counts(buffer, 150, 128, prioritize_profitable=False)
    probs = view_probabilities(engine)
    assert probs[rare] > 0.5
    assert after[rare] / sum(after.values()) > 10 * before.get(rare, 0) / sum(before.values())
    assert chi2(after, probs) < chi2_critical(len(probs) - 1)


def test_update_priorities_writes_abs_td_plus_epsilon_and_raises_the_maximum(replay):
    engine, ids, _ = replay
    buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=16, priority_epsilon=1e-3)
    buffer.update_priorities([ids[0], ids[1], ids[1]], [-2.0, 0.5, -7.0])
    want = {ids[0]: pytest.approx(2.001), ids[1]: pytest.approx(7.001)}  # largest error of a repeated id
    assert priorities(engine, "v_rl_replay_weights", ids[:2]) == want  # at once in the views
    assert rb.fold(engine) == 1
    assert priorities(engine, "experiences", ids[:2]) == want  # in experiences once folded
    assert buffer.max_priority() == pytest.approx(100.0)  # the invalid row's 100 is the max
    buffer.update_priorities([ids[2]], [250.0])
    assert buffer.max_priority() == pytest.approx(250.001)
    with engine.begin() as conn:
        new = experience(conn, None)
        assert conn.execute(
            sa.text("SELECT priority FROM experiences WHERE id = :i"), {"i": new}
        ).scalar() == pytest.approx(250.001)


@pytest.mark.parametrize(
    "ids, errors, field",
    [
        ([1, 2], [0.1], "td_errors"),
        ([1], [float("nan")], "td_errors"),
        ([1], [float("inf")], "td_errors"),
    ],
)
def test_bad_td_errors_are_refused(replay, ids, errors, field):
    engine, _, _ = replay
    with pytest.raises(ValidationError) as err:
        rb.ProfitWeightedExperienceBuffer(engine).update_priorities(ids, errors)
    assert err.value.field == field


def test_bad_arguments_are_refused(replay):
    engine, _, _ = replay
    with pytest.raises(ValidationError, match="batch_size"):
        rb.ProfitWeightedExperienceBuffer(engine).sample(0)
    with pytest.raises(ValidationError, match="profitable_share"):
        rb.ProfitWeightedExperienceBuffer(engine, profitable_share=1.5)
    with pytest.raises(ValidationError, match="alpha"):
        rb.ProfitWeightedExperienceBuffer(engine).configure(alpha=2.0)


def test_empty_replay_says_so(engine):
    with pytest.raises(rb.EmptyReplay, match="no replayable experiences"):
        rb.ProfitWeightedExperienceBuffer(engine).sample(8)


def test_no_profitable_experiences_means_all_draws_from_all(engine):
    small_replay(engine, [1.0, 2.0, 3.0], [False, False, False])
    batch = rb.ProfitWeightedExperienceBuffer(engine, seed=1).sample(16)
    assert len(batch) == 16 and not batch.from_profitable.any()


def test_beta_anneals_to_one():
    schedule = BetaSchedule(0.4, 100)
    assert [schedule.at(s) for s in (0, 50, 100, 1000)] == pytest.approx([0.4, 0.7, 1.0, 1.0])
    assert importance_weights(np.array([0.5, 0.25, 0.25]), 3, 1.0) == pytest.approx([0.5, 1.0, 1.0])


def test_a_symbol_is_sampled_on_its_own(engine):
    btc = small_replay(engine, [1.0, 2.0, 4.0], [True, False, False])
    eth = small_replay(engine, [0.5, 3.0, 6.0, 9.0], [False, True, False, True], symbol="ETH-PERP")
    buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=21)
    counts, profitable = draw_counts(buffer, 120, 64, symbol="ETH-PERP")
    assert set(counts) | set(profitable) <= set(eth)
    with engine.connect() as conn:
        probs = dict(
            conn.execute(
                sa.text("SELECT id, symbol_sampling_probability FROM v_rl_replay WHERE symbol = 'ETH-PERP'")
            ).all()
        )
    assert sum(probs.values()) == pytest.approx(1.0)
    assert chi2(counts, probs) < chi2_critical(len(eth) - 1)
    batch = buffer.sample(16, prioritize_profitable=False, symbol="ETH-PERP")
    assert batch.replay_size == len(eth)
    assert np.allclose(batch.probabilities, [probs[i] for i in batch.ids.tolist()])
    assert buffer.size("BTC-PERP") == {"profitable": 1, "total": len(btc)}
    with pytest.raises(rb.EmptyReplay, match="SOL"):
        buffer.sample(4, symbol="SOL-PERP")


def test_the_buffer_reconnects_once_when_its_connection_was_dropped(replay):
    engine, ids, _ = replay
    buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=21)
    first = buffer.sample(8)
    with engine.connect() as conn:  # what a server restart does to an idle connection
        assert (
            conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"
                )
            ).scalar()
            >= 1
        )
    assert len(buffer.sample(8)) == 8
    assert buffer.update_priorities(first.ids, np.ones(8)) >= 1
    buffer.close()
