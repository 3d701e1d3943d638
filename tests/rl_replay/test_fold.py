"""Write-backs and draws are logged and folded into experiences later (migration 0010).

The views are exact at every moment: before a fold (they read the logs), after it, and while it runs
beside write-backs. A priority set directly on experiences wins over write-backs still pending. The
buffer folds in the background every ``rl_replay_fold_every`` write-backs and when it closes.
"""

import dataclasses
import threading
import time

import numpy as np
import pytest
import sqlalchemy as sa

from app.config import get_settings
from app.db import migrate
from app.db.engine import make_engine
from app.rl_replay import buffer as rb

from .support import small_replay
from .test_index import assert_consistent

VIEW = "SELECT id, priority, times_sampled, last_sampled_at, sample_weight, sampling_probability FROM v_rl_replay"


def snapshot(engine, query: str = VIEW) -> dict:
    with engine.connect() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(sa.text(query + " ORDER BY 1"))}


def same(a: dict, b: dict) -> bool:
    """Equal views: the probabilities to rounding (a fold re-sums the buckets it re-slots), the rest exactly."""
    return a.keys() == b.keys() and all(
        a[i][:-1] == b[i][:-1] and a[i][-1] == pytest.approx(b[i][-1], rel=1e-12) for i in a
    )


def stored(engine) -> dict:
    return snapshot(engine, "SELECT id, priority, times_sampled FROM experiences")


def test_folding_moves_the_logs_into_experiences_and_changes_no_view(engine):
    rng = np.random.default_rng(4)
    ids = small_replay(engine, list(rng.exponential(1.0, 40) + 1e-3), list(rng.random(40) < 0.4))
    buffer = rb.ProfitWeightedExperienceBuffer(
        engine, seed=4, settings=dataclasses.replace(get_settings(), rl_replay_fold_every=0)
    )
    before = stored(engine)
    written = {}
    for _ in range(5):
        batch = buffer.sample(16)
        td = rng.exponential(1.0, 16) * rng.choice([1e-3, 1.0, 30.0], 16)
        buffer.update_priorities(batch.ids, td)
        largest: dict[int, float] = {}  # an id drawn twice keeps its largest error
        for i, p in zip(batch.ids.tolist(), np.abs(td) + buffer.priority_epsilon):
            largest[i] = max(p, largest.get(i, 0.0))
        written.update(largest)
    assert set(written) <= set(ids)
    assert stored(engine) == before  # nothing in experiences yet ...
    view = snapshot(engine)
    assert {i: view[i][0] for i in written} == pytest.approx(written)  # ... but the views show it all
    assert rb.pending(engine) == {"write_backs": 5, "batches": 5}
    assert_consistent(engine)

    assert rb.fold(engine, 2, compact_below=2) == 4  # the two oldest of each log (2: always compacts)
    assert same(snapshot(engine), view)
    assert_consistent(engine)
    assert rb.fold(engine, compact_below=2) == 6
    assert same(snapshot(engine), view)
    assert {i: p for i, (p, _) in stored(engine).items() if i in written} == pytest.approx(written)
    assert sum(n for _, n in stored(engine).values()) == 5 * 16
    assert rb.pending(engine) == {"write_backs": 0, "batches": 0}
    with engine.connect() as conn:  # every row back within two octaves of its top
        assert (
            conn.execute(
                sa.text(
                    "SELECT count(*) FROM rl_replay_slots s JOIN rl_replay_buckets b ON b.id = s.bucket_id "
                    "WHERE NOT rl_replay_fits(s.weight, b.bucket)"
                )
            ).scalar()
            == 0
        )
    assert_consistent(engine)
    with pytest.raises(sa.exc.DBAPIError, match="p_batches must be >= 1"):
        rb.fold(engine, 0)


def test_a_priority_set_directly_wins_over_pending_write_backs(engine):
    a, b, c = small_replay(engine, [1.0, 2.0, 3.0], [False, True, False])
    buffer = rb.ProfitWeightedExperienceBuffer(
        engine, seed=5, settings=dataclasses.replace(get_settings(), rl_replay_fold_every=0)
    )
    buffer.update_priorities([a, b], [7.0, 8.0])
    buffer.update_priorities([a], [9.0])
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE experiences SET priority = 0.5 WHERE id = ANY(:ids)"), {"ids": [a, c]})
    want = {a: 0.5, b: pytest.approx(8.0), c: 0.5}
    assert {i: p for i, (p, *_) in snapshot(engine).items()} == want
    assert_consistent(engine)
    # c had nothing pending: its update needs no log entry.
    assert rb.pending(engine)["write_backs"] == 3
    assert rb.fold(engine) == 3
    assert {i: p for i, (p, _) in stored(engine).items()} == want
    assert_consistent(engine)


def test_the_buffer_folds_in_the_background_and_when_it_closes(engine):
    ids = small_replay(engine, [1.0 + i for i in range(30)], [i % 2 == 0 for i in range(30)])
    buffer = rb.ProfitWeightedExperienceBuffer(
        engine, seed=6, settings=dataclasses.replace(get_settings(), rl_replay_fold_every=3)
    )
    for _ in range(3):
        batch = buffer.sample(8)
        buffer.update_priorities(batch.ids, np.full(8, 0.25))
    deadline = time.monotonic() + 30
    while rb.pending(engine) != {"write_backs": 0, "batches": 0}:
        assert time.monotonic() < deadline, "the background fold did not run"
        time.sleep(0.05)
    batch = buffer.sample(8)
    buffer.update_priorities(batch.ids, np.full(8, 4.0))
    assert rb.pending(engine) == {"write_backs": 1, "batches": 1}
    buffer.close()
    assert rb.pending(engine) == {"write_backs": 0, "batches": 0}
    assert sum(n for _, n in stored(engine).values()) == 4 * 8
    assert set(ids) >= set(batch.ids.tolist())
    assert_consistent(engine)


def test_folds_beside_write_backs_and_direct_updates_keep_everything_exact(engine):
    rng = np.random.default_rng(9)
    ids = small_replay(engine, list(rng.exponential(1.0, 60) + 1e-3), list(rng.random(60) < 0.4))
    errors, done = [], threading.Event()
    last: dict[int, float] = {}

    def write_backs():
        buffer = rb.ProfitWeightedExperienceBuffer(
            engine, seed=10, settings=dataclasses.replace(get_settings(), rl_replay_fold_every=0)
        )
        local = np.random.default_rng(10)
        try:
            for _ in range(25):
                batch = buffer.sample(12)
                td = local.exponential(2.0, 12) * local.choice([1e-2, 1.0, 1e2], 12)
                buffer.update_priorities(batch.ids, td)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            done.set()

    def folds():
        try:
            while not done.is_set():
                rb.fold(engine, 2)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def direct_updates():
        local = np.random.default_rng(11)
        try:
            while not done.is_set():
                chosen = sorted(local.choice(ids, 4, replace=False).tolist())
                value = float(local.exponential(1.0) + 1e-3)
                with engine.begin() as conn:
                    conn.execute(
                        sa.text("UPDATE experiences SET priority = :p WHERE id = ANY(:ids)"),
                        {"p": value, "ids": chosen},
                    )
                last.update(dict.fromkeys(chosen, value))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (write_backs, folds, direct_updates)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    view = snapshot(engine)
    assert_consistent(engine)
    rb.fold(engine)
    assert same(snapshot(engine), view)
    assert {i: p for i, (p, _) in stored(engine).items()} == {i: v[0] for i, v in view.items()}
    assert sum(n for _, n in stored(engine).values()) == 25 * 12
    assert_consistent(engine)


def test_migration_0010_round_trips_with_pending_logs(empty_db_url):
    engine = make_engine(empty_db_url)
    try:
        migrate.upgrade(engine)
        ids = small_replay(engine, [1.0, 2.0, 3.0, 4.0], [False, True, False, True])
        buffer = rb.ProfitWeightedExperienceBuffer(
            engine, seed=7, settings=dataclasses.replace(get_settings(), rl_replay_fold_every=0)
        )
        batch = buffer.sample(8)
        buffer.update_priorities(ids[:2], [0.02, 50.0])
        view = snapshot(engine)

        migrate.downgrade(engine, "0009")  # folds the logs first: nothing is lost
        assert same(snapshot(engine), view)
        assert {i: p for i, (p, _) in stored(engine).items()} == {i: v[0] for i, v in view.items()}
        assert sum(n for _, n in stored(engine).values()) == batch.ids.size
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT to_regclass('rl_replay_priority_log')")).scalar() is None
            assert conn.execute(
                sa.text("SELECT to_regprocedure('rl_replay_write_back(bigint[], float8[], bigint[], boolean)')")
            ).scalar()
            # Rebuilt for v0002, whose rows sit within one octave of their bucket's top.
            assert (
                conn.execute(
                    sa.text(
                        "SELECT count(*) FROM rl_replay_slots s JOIN rl_replay_buckets b ON b.id = s.bucket_id "
                        "WHERE NOT rl_replay_fits(s.weight, b.bucket)"
                    )
                ).scalar()
                == 0
            )

        migrate.upgrade(engine)
        assert migrate.current_revisions(engine) == migrate.head_revisions()
        with engine.connect() as conn:
            assert conn.execute(
                sa.text(
                    "SELECT has_table_privilege('trainsrv_trainer', 'rl_replay_priority_log', 'INSERT, DELETE') AND "
                    # An internal view: not granted to analysts since migration 0011 (issue 18).
                    "NOT has_table_privilege('trainsrv_analyst', 'v_rl_replay_pending_priorities', 'SELECT')"
                )
            ).scalar()
        buffer = rb.ProfitWeightedExperienceBuffer(engine, seed=8)
        buffer.update_priorities(buffer.sample(4).ids, [1.0] * 4)
        buffer.close()
        assert_consistent(engine)
    finally:
        engine.dispose()


def test_write_backs_of_the_same_row_log_in_the_order_they_reach_the_index(engine):
    # The latest logged priority (what the views show) must be the one the index got last, so a write-back
    # logs only once it holds the index lock: here one waits for it while another, holding it, writes.
    a, _ = small_replay(engine, [1.0, 2.0], [False, True])
    write_back = sa.text("SELECT rl_replay_write_back(CAST(:ids AS bigint[]), CAST(:p AS float8[]))")
    with engine.connect() as holder:
        holder.execute(sa.text("SELECT 1 FROM rl_replay_config WHERE id = 1 FOR UPDATE"))
        waiting = threading.Thread(target=lambda: _autocommit(engine, write_back, {"ids": [a], "p": [0.3]}))
        waiting.start()
        time.sleep(0.5)  # the thread's write-back waits for the lock
        holder.execute(write_back, {"ids": [a], "p": [40.0]})
        holder.commit()
    waiting.join()
    assert snapshot(engine)[a][0] == pytest.approx(0.3)  # the write-back that reached the index last
    assert_consistent(engine)
    rb.fold(engine)
    assert snapshot(engine)[a][0] == pytest.approx(0.3)
    assert_consistent(engine)


def _autocommit(engine, statement, params) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(statement, params)


@pytest.mark.parametrize(
    "priorities, null_id",
    [
        ([0.0, 1.0], False),
        ([-1.0, 1.0], False),
        ([float("nan"), 1.0], False),
        ([float("inf"), 1.0], False),
        ([None, 1.0], False),
        ([1.0, 1.0], True),
    ],
)
def test_write_back_refuses_what_experiences_would_and_logs_nothing(engine, priorities, null_id):
    a, b = small_replay(engine, [1.0, 2.0], [False, True])
    with pytest.raises(sa.exc.DBAPIError, match="priorities must be finite and > 0"):
        with engine.begin() as conn:
            conn.execute(
                sa.text("SELECT rl_replay_write_back(CAST(:ids AS bigint[]), CAST(:p AS float8[]))"),
                {"ids": [None if null_id else a, b], "p": priorities},
            )
    assert rb.pending(engine)["write_backs"] == 0
    assert_consistent(engine)


def test_an_id_given_twice_keeps_its_last_priority_in_the_log_and_the_index(engine):
    a, b = small_replay(engine, [1.0, 2.0], [False, True])
    with engine.begin() as conn:
        assert (
            conn.execute(
                sa.text("SELECT rl_replay_write_back(CAST(:ids AS bigint[]), CAST(:p AS float8[]))"),
                {"ids": [a, b, a], "p": [5.0, 6.0, 0.25]},
            ).scalar()
            == 2
        )
    assert snapshot(engine)[a][0] == 0.25
    assert_consistent(engine)
    rb.fold(engine)
    assert stored(engine)[a][0] == 0.25
