"""The priority write-back path of the sampling index (migrations 0009 and 0010, rl_replay_index v0003).

A write-back leaves a row in its bucket while its weight is within four octaves below the bucket's top
and moves it to its natural bucket otherwise; the fold brings rows back within two octaves, where every
other path keeps them; sampling stays exact at the lower acceptance this allows; the write-back logs the
priorities and re-indexes its own rows; the migrations round-trip.
"""

import math
import threading

import numpy as np
import pytest
import sqlalchemy as sa

from app.db import migrate
from app.db.engine import make_engine
from app.rl_replay import buffer as rb

from .support import experience, package, small_replay
from .test_index import assert_consistent
from .test_sampling import chi2, chi2_critical, draw_counts, view_probabilities

EPSILON = 1e-9


def top(k: int) -> float:
    return 2.0 ** ((k + 1) / 4)


def placement(engine, ids) -> dict[int, tuple[int, int, int, float]]:
    """id -> (bucket number, bucket id, slot, weight) in the index."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT s.experience_id, b.bucket, s.bucket_id, s.slot, s.weight FROM rl_replay_slots s "
                "JOIN rl_replay_buckets b ON b.id = s.bucket_id WHERE s.experience_id = ANY(:ids)"
            ),
            {"ids": list(ids)},
        )
        return {r[0]: tuple(r[1:]) for r in rows}


def linear_buffer(engine, seed: int = 1) -> rb.ProfitWeightedExperienceBuffer:
    """alpha 1: an unprofitable row's weight is its priority (plus this tiny epsilon)."""
    buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=seed, priority_epsilon=EPSILON)
    buffer.configure(alpha=1.0)
    return buffer


def write(buffer, ids, priorities) -> int:
    return buffer.update_priorities(ids, np.asarray(priorities) - EPSILON)


def test_fits_is_two_octaves_below_the_top(engine):
    with engine.connect() as conn:

        def fits(weight, bucket):
            return conn.execute(sa.text("SELECT rl_replay_fits(:w, :k)"), {"w": weight, "k": bucket}).scalar()

        assert fits(top(3) * (1 - 1e-12), 3) and not fits(top(3), 3)
        assert fits(top(-5), 3) and not fits(top(-5) * (1 - 1e-12), 3)
        weights = np.exp(np.random.default_rng(0).uniform(-20, 20, 200)).tolist()
        natural = conn.execute(
            sa.text("SELECT bool_and(rl_replay_fits(w, rl_replay_bucket(w))) FROM unnest(CAST(:w AS float8[])) AS w"),
            {"w": weights},
        ).scalar()
        assert natural


def test_tolerates_is_four_octaves_below_the_top(engine):
    with engine.connect() as conn:

        def tolerates(weight, bucket):
            return conn.execute(sa.text("SELECT rl_replay_tolerates(:w, :k)"), {"w": weight, "k": bucket}).scalar()

        assert tolerates(top(3) * (1 - 1e-12), 3) and not tolerates(top(3), 3)
        assert tolerates(top(-13), 3) and not tolerates(top(-13) * (1 - 1e-12), 3)
        assert top(3) / top(-13) == pytest.approx(16)


def test_a_row_stays_within_four_octaves_below_its_top_until_folded(engine):
    a, b, c, d = small_replay(engine, [1.9, 3.9, 3.9, 3.9], [False] * 4)
    buffer = linear_buffer(engine)
    start = placement(engine, [a, b, c, d])
    assert [start[i][0] for i in (a, b, c, d)] == [3, 7, 7, 7]  # natural buckets: tops 2, 4, 4, 4

    assert write(buffer, [a, b], [1.001, 2.5]) == 2  # both within [top / 4, top)
    moved = placement(engine, [a, b, c, d])
    assert moved[a][:3] == start[a][:3] and moved[b][:3] == start[b][:3]
    assert moved[a][3] == pytest.approx(1.001) and moved[b][3] == pytest.approx(2.5)
    assert_consistent(engine)

    # Below two octaves but within four, above the top, within two, below four octaves (top / 16 = 0.25).
    write(buffer, [a, b, c, d], [0.499, 4.2, 1.01, 0.249])
    moved = placement(engine, [a, b, c, d])
    assert [moved[i][0] for i in (a, b, c, d)] == [3, 8, 7, -9]  # a, c stay; b, d to their natural bucket
    assert_consistent(engine)

    assert rb.fold(engine, compact_below=0) == 2  # two write-backs, no batch, no moves
    assert placement(engine, [a, b, c, d]) == moved
    write(buffer, [a], [0.499])
    assert rb.fold(engine, compact_below=2) == 1  # acceptance is always below 2: moves
    folded = placement(engine, [a, b, c, d])
    assert [folded[i][0] for i in (a, b, c, d)] == [-5, 8, 7, -9]  # the fold moves a within two octaves
    assert_consistent(engine)


def test_sampling_stays_exact_when_rows_sit_at_the_bottom_of_their_window(engine):
    # Rows placed at the top of buckets 3, 7, 11, 15, then written back to just above a sixteenth of it: every
    # row stays, acceptance about 1/16 (the least the write-back tolerates), weights 1/8, 1/4, 1/2, 1.
    buckets = [3, 7, 11, 15]
    ids = small_replay(engine, [0.999 * top(k) for k in buckets for _ in range(3)], [False] * 12)
    buffer = linear_buffer(engine, seed=5)
    start = placement(engine, ids)
    write(buffer, ids, [1.0005 * top(k - 16) for k in buckets for _ in range(3)])
    assert {i: p[:3] for i, p in placement(engine, ids).items()} == {i: p[:3] for i, p in start.items()}
    assert_consistent(engine)
    with engine.connect() as conn:
        acceptance = conn.execute(
            sa.text(
                "SELECT sum(s.weight) / sum(rl_replay_bucket_top(b.bucket)) FROM rl_replay_slots s "
                "JOIN rl_replay_buckets b ON b.id = s.bucket_id"
            )
        ).scalar()
        assert acceptance == pytest.approx(1 / 16, abs=0.002)
        # The draw sizes its rounds by the acceptance and goes on when one falls short: it always returns
        # what was asked, about need / acceptance candidates later.
        need = 4096
        for seed in range(10):
            draws = (
                conn.execute(sa.text("SELECT draw FROM rl_replay_draw(NULL, :n, 0, :s)"), {"n": need, "s": seed / 10})
                .scalars()
                .all()
            )
            assert len(draws) == need
            assert 12 * need < max(draws) < 20 * need

    counts, _ = draw_counts(buffer, 30, 1024, prioritize_profitable=False)
    probs = view_probabilities(engine)
    assert chi2(counts, probs) < chi2_critical(len(probs) - 1)
    assert chi2(counts, {i: 1 / len(probs) for i in probs}) > 10 * chi2_critical(len(probs) - 1)
    batch = buffer.sample(64, prioritize_profitable=False)
    assert np.allclose(batch.probabilities, [probs[i] for i in batch.ids.tolist()], rtol=1e-12)


def test_write_back_indexes_replayable_rows_and_logs_every_priority(engine):
    ids = small_replay(engine, [1.0, 2.0, 3.0], [False, True, False])
    with engine.begin() as conn:
        invalid = experience(conn, 5.0, state=package(conn, valid=False))
    buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=2)
    assert buffer.update_priorities(ids + [invalid, 10**12], [9.0, 0.01, 40.0, 70.0, 1.0]) == 3
    assert invalid not in placement(engine, ids + [invalid])
    assert buffer.max_priority() == pytest.approx(70.0 + 1e-6)
    assert_consistent(engine)
    with engine.connect() as conn:

        def priority(source):
            return conn.execute(sa.text(f"SELECT priority FROM {source} WHERE id = :i"), {"i": invalid}).scalar()

        assert priority("v_rl_replay_weights") == pytest.approx(70.0) and priority("experiences") == 5.0
    assert rb.fold(engine) == 1  # the id that does not exist is skipped
    with engine.connect() as conn:
        assert conn.execute(
            sa.text(f"SELECT priority FROM experiences WHERE id = {invalid}")
        ).scalar() == pytest.approx(70.0)
    assert_consistent(engine)


def test_the_trigger_still_indexes_every_other_update(engine):
    ids = small_replay(engine, [1.0, 2.0, 3.0, 4.0], [False, True, False, True])
    with engine.begin() as conn:
        # A write-back and a fold, then plain priority updates in the same transaction: only the fold's own
        # UPDATE is skipped by the trigger.
        conn.execute(
            sa.text("SELECT rl_replay_write_back(CAST(:ids AS bigint[]), CAST(:p AS float8[]))"),
            {"ids": ids[:2], "p": [30.0, 0.02]},
        )
        conn.execute(sa.text("SELECT rl_replay_fold()"))
        conn.execute(sa.text("UPDATE experiences SET priority = 60 WHERE id = :i"), {"i": ids[0]})
        # The marker is the fold's own statement time: set by hand it never matches another statement.
        conn.execute(sa.text("SELECT set_config('trainsrv.rl_replay_fold', statement_timestamp()::text, true)"))
        conn.execute(
            sa.text("UPDATE experiences SET priority = 0.003, is_profitable = true WHERE id = :i"), {"i": ids[2]}
        )
    assert placement(engine, [ids[0]])[ids[0]][3] == pytest.approx(60**0.6)
    assert_consistent(engine)


def test_window_check_finds_a_row_outside_its_window(engine):
    a, b = small_replay(engine, [1.9, 3.9], [False, False])
    linear_buffer(engine)
    with engine.begin() as conn:
        # Weight 0.1 in bucket 3 (top 2) agrees with the view and the bucket sum, but not with the window.
        conn.execute(sa.text("ALTER TABLE experiences DISABLE TRIGGER rl_replay_on_update"))
        conn.execute(sa.text("UPDATE experiences SET priority = 0.1 WHERE id = :a"), {"a": a})
        conn.execute(
            sa.text(
                "UPDATE rl_replay_buckets SET weight_sum = weight_sum - 1.8 "
                "WHERE id = (SELECT bucket_id FROM rl_replay_slots WHERE experience_id = :a)"
            ),
            {"a": a},
        )
        conn.execute(
            sa.text("UPDATE rl_replay_slots SET weight = 0.1, priority = 0.1 WHERE experience_id = :a"), {"a": a}
        )
        conn.execute(sa.text("ALTER TABLE experiences ENABLE TRIGGER rl_replay_on_update"))
    assert rb.index_problems(engine) == [{"experience_id": a, "problem": "different"}]


def _natural_misplaced(conn) -> int:
    return conn.execute(
        sa.text(
            "SELECT count(*) FROM rl_replay_slots s JOIN rl_replay_buckets b ON b.id = s.bucket_id "
            "WHERE b.bucket <> rl_replay_bucket(s.weight)"
        )
    ).scalar()


def test_migration_0009_round_trips_with_data(empty_db_url):
    engine = make_engine(empty_db_url)
    try:
        migrate.upgrade(engine)
        ids = small_replay(engine, [0.999 * top(k) for k in (3, 7, 11)], [False, True, False])
        buffer = linear_buffer(engine)
        write(buffer, ids, [1.2, 2.5, 5.0])  # all stay above their natural bucket
        buffer.close()
        with engine.connect() as conn:
            assert _natural_misplaced(conn) == 3

        migrate.downgrade(engine, "0008")
        with engine.connect() as conn:
            assert _natural_misplaced(conn) == 0  # rebuilt: v0001 expects natural buckets
            assert conn.execute(sa.text("SELECT to_regprocedure('rl_replay_fits(float8, integer)')")).scalar() is None
            assert conn.execute(sa.text("SELECT to_regprocedure('rl_replay_reweigh(bigint[])')")).scalar()
            assert "fillfactor=90" not in str(
                conn.execute(sa.text("SELECT reloptions FROM pg_class WHERE relname = 'experiences'")).scalar()
            )
        with engine.begin() as conn:  # v0001's trigger path works
            conn.execute(sa.text("UPDATE experiences SET priority = 7 WHERE id = :i"), {"i": ids[0]})
            assert conn.execute(
                sa.text("SELECT weight FROM rl_replay_slots WHERE experience_id = :i"), {"i": ids[0]}
            ).scalar() == pytest.approx(7.0)

        migrate.upgrade(engine)
        assert migrate.current_revisions(engine) == migrate.head_revisions()
        assert_consistent(engine)
        with engine.connect() as conn:
            assert "fillfactor=90" in str(
                conn.execute(sa.text("SELECT reloptions FROM pg_class WHERE relname = 'experiences'")).scalar()
            )
            for fn in (
                "rl_replay_fits(float8, integer)",
                "rl_replay_reweigh(bigint[])",
                "rl_replay_apply(bigint[], text[], boolean[], float8[], float8[], boolean)",
                "rl_replay_tolerates(float8, integer)",
                "rl_replay_fold(integer, float8)",
                "rl_replay_write_back(bigint[], float8[], boolean)",
                "rl_replay_weight(float8, boolean, float8, float8)",
            ):
                privileges = conn.execute(
                    sa.text(
                        "SELECT has_function_privilege('public', CAST(:f AS regprocedure), 'EXECUTE'), "
                        "has_function_privilege('trainsrv_trainer', CAST(:f AS regprocedure), 'EXECUTE')"
                    ),
                    {"f": fn},
                ).one()
                assert tuple(privileges) == (False, True), fn
        assert not math.isnan(rb.ProfitWeightedExperienceBuffer(engine, seed=3).sample(8).probabilities.sum())
    finally:
        engine.dispose()


def test_concurrent_writers_keep_the_index_consistent(engine):
    # Write-backs on two connections and trigger-path updates on a third touch rows of the same buckets at
    # once; they serialise on rl_replay_config, so every plan's rows are still there when it writes.
    rng = np.random.default_rng(8)
    ids = small_replay(engine, list(rng.exponential(1.0, 90) + 1e-3), list(rng.random(90) < 0.4))
    groups = [ids[0:30], ids[30:60], ids[60:90]]
    errors = []

    def write_backs(group, seed):
        buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=seed)
        local = np.random.default_rng(seed)
        try:
            for _ in range(15):
                chosen = local.choice(group, size=12, replace=False).tolist()
                buffer.update_priorities(chosen, local.exponential(2.0, 12) * local.choice([1e-2, 1.0, 1e2], 12))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            buffer.close()

    def other_updates(group):
        local = np.random.default_rng(3)
        try:
            for _ in range(15):
                with engine.begin() as conn:
                    conn.execute(
                        sa.text(
                            "UPDATE experiences SET is_profitable = NOT is_profitable, "
                            "priority = priority * :f WHERE id = ANY(:ids)"
                        ),
                        {"f": float(local.choice([0.1, 3.0])), "ids": local.choice(group, 5).tolist()},
                    )
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=write_backs, args=(groups[0], 1)),
        threading.Thread(target=write_backs, args=(groups[1], 2)),
        threading.Thread(target=other_updates, args=(groups[2],)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert_consistent(engine)
