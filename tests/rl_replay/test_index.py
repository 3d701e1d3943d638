"""The trigger-kept sampling index stays exactly in step with v_rl_replay whatever writes happen."""

import numpy as np
import pytest
import sqlalchemy as sa

from app.rl_replay import buffer as rb

from .support import experience, package, small_replay


def replayable(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM v_rl_replay")).scalar()


def assert_consistent(engine):
    assert rb.index_problems(engine) == []
    assert rb.ProfitWeightedExperienceBuffer(engine).size()["total"] == replayable(engine)


def test_random_writes_keep_the_index_dense_and_exact(engine):
    rng = np.random.default_rng(3)
    ids = small_replay(engine, list(rng.exponential(1.0, 60) + 1e-3), list(rng.random(60) < 0.4))
    buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=3)
    assert_consistent(engine)
    for round_ in range(12):
        chosen = rng.choice(ids, size=25).tolist()  # repeats on purpose
        buffer.update_priorities(chosen, rng.exponential(2.0, 25) * rng.choice([1e-3, 1.0, 1e3], 25))
        with engine.begin() as conn:
            if round_ % 3 == 0:
                gone = ids.pop(int(rng.integers(len(ids))))
                conn.execute(sa.text("DELETE FROM experiences WHERE id = :i"), {"i": gone})
            if round_ % 4 == 1:
                conn.execute(
                    sa.text("UPDATE experiences SET is_profitable = NOT is_profitable WHERE id = :i"),
                    {"i": ids[round_]},
                )
            ids.extend(experience(conn, None, profitable=bool(k % 2)) for k in range(3))
        assert_consistent(engine)
        buffer.sample(32)
    assert_consistent(engine)


def test_copied_fields_follow_updates(engine):
    # The index keeps the trainer's fields of each row; a refreshed outcome (what the experience builder
    # writes) must reach the next batch.
    ids = small_replay(engine, [1.0, 2.0], [False, True])
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE experiences SET reward = 0.5, optimal_action = 'short', action = 'hold' WHERE id = :i"),
            {"i": ids[0]},
        )
    assert_consistent(engine)
    batch = rb.ProfitWeightedExperienceBuffer(engine, seed=4).sample(64, prioritize_profitable=False)
    first = batch.ids == ids[0]
    assert first.any()
    assert set(batch.rewards[first]) == {0.5} and {batch.optimal_actions[k] for k in np.flatnonzero(first)} == {"short"}
    assert {batch.actions[k] for k in np.flatnonzero(first)} == {"hold"}


def test_package_validity_changes_move_experiences_in_and_out(engine):
    with engine.begin() as conn:
        shared = package(conn)
        a = experience(conn, 1.0, state=shared)
        b = experience(conn, 2.0, next_state=shared)
        c = experience(conn, 3.0)
    assert replayable(engine) == 3
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE input_packages SET is_valid = false WHERE id = :p"), {"p": shared})
    assert_consistent(engine)
    batch = rb.ProfitWeightedExperienceBuffer(engine, seed=1).sample(40)
    assert set(batch.ids.tolist()) == {c}
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE input_packages SET is_valid = true WHERE id = :p"), {"p": shared})
    assert_consistent(engine)
    assert replayable(engine) == 3 and {a, b} <= set(
        rb.ProfitWeightedExperienceBuffer(engine, seed=2).sample(200).ids.tolist()
    )


def test_terminal_transitions_need_no_next_state(engine):
    with engine.begin() as conn:
        done = experience(conn, 1.0, done=True)
        dangling = conn.execute(
            sa.text(
                "INSERT INTO experiences (symbol, state_package_id, action, reward, done, is_profitable, priority) "
                "VALUES ('X', :s, 'hold', 0, false, false, 1) RETURNING id"
            ),
            {"s": package(conn)},
        ).scalar()
    with engine.connect() as conn:
        ids = {r[0] for r in conn.execute(sa.text("SELECT id FROM v_rl_replay"))}
    assert done in ids and dangling not in ids  # a non-terminal step without its next state is not replayable
    assert_consistent(engine)


def test_config_change_rebuilds_the_weights(engine):
    small_replay(engine, [0.5, 1.0, 4.0], [True, False, False])
    buffer = rb.ProfitWeightedExperienceBuffer(engine)
    assert buffer.configure(alpha=1.0, profit_boost=3.0)["alpha"] == 1.0
    with engine.connect() as conn:
        weights = sorted(r[0] for r in conn.execute(sa.text("SELECT weight FROM rl_replay_slots")))
    assert weights == pytest.approx([1.0, 1.5, 4.0])
    assert_consistent(engine)


def test_truncate_and_rebuild(engine):
    small_replay(engine, [1.0, 2.0], [False, True])
    with engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE experiences"))
    assert rb.ProfitWeightedExperienceBuffer(engine).size() == {"profitable": 0, "total": 0}
    small_replay(engine, [1.0, 2.0, 3.0], [False, True, True])
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM rl_replay_slots"))  # damage it
    assert rb.index_problems(engine) != []
    assert rb.rebuild(engine) == 3
    assert_consistent(engine)


def test_profit_tracking_is_visible_in_sql(engine):
    small_replay(engine, [1.0, 1.0, 1.0, 1.0], [True, True, False, False])
    rb.ProfitWeightedExperienceBuffer(engine, seed=5, profitable_share=1.0).sample(20)
    stats = {s["is_profitable"]: s for s in rb.ProfitWeightedExperienceBuffer(engine).stats()}
    assert stats[True]["experiences"] == 2 and stats[False]["experiences"] == 2
    assert stats[True]["times_sampled"] == 20 and stats[False]["times_sampled"] == 0
    assert stats[True]["sample_share"] == 1.0
    assert stats[True]["probability_mass_share"] == pytest.approx(2 / 3)  # boost 2 on equal priorities
