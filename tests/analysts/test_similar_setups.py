"""similar_setups: exact neighbours on a small set, earlier-only, valid-only, with outcome aggregates."""

import datetime as dt
import hashlib

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

T0 = dt.datetime(2022, 1, 1, tzinfo=dt.UTC)
INSERT = sa.text(
    "INSERT INTO input_packages (symbol, ts, payload, payload_format, data_hash, completeness_score, is_valid, "
    "embedding) VALUES (:symbol, :ts, '\\x00', 'test', :hash, 1.0, :valid, :embedding) RETURNING id"
)


def _insert(conn, i, vec, symbol="BTC-PERP", valid=True):
    return conn.execute(
        INSERT,
        {
            "symbol": symbol,
            "ts": T0 + dt.timedelta(minutes=i),
            "hash": hashlib.sha256(f"{symbol}{i}".encode()).digest(),
            "valid": valid,
            "embedding": "[" + ",".join(f"{x:.6f}" for x in vec) + "]",
        },
    ).scalar()


def _cosine(a, b):
    return 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


@pytest.fixture
def packages(engine):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(300, 32)).astype(np.float32)
    with engine.begin() as conn:
        ids = [_insert(conn, i, v) for i, v in enumerate(vectors)]
    return ids, vectors


def test_returns_the_exact_nearest_earlier_neighbours(engine, packages):
    ids, vectors = packages
    query = len(ids) - 1
    with engine.connect() as conn:
        # ef_search above the set size makes the HNSW scan exhaustive, so the answer must be exact.
        conn.execute(sa.text("SET hnsw.ef_search = 400"))
        got = conn.execute(sa.text("SELECT package_id, distance FROM similar_setups(:p, 10)"), {"p": ids[query]}).all()
    expected = sorted(range(query), key=lambda j: _cosine(vectors[query], vectors[j]))[:10]
    assert [r.package_id for r in got] == [ids[j] for j in expected]
    assert got[0].distance == pytest.approx(_cosine(vectors[query], vectors[expected[0]]), abs=1e-5)


def test_never_returns_later_invalid_or_other_symbol_packages(engine, packages):
    ids, vectors = packages
    middle = 150
    with engine.begin() as conn:
        twin_later = _insert(conn, 1000, vectors[middle])  # identical, but in the future
        twin_invalid = _insert(conn, -5, vectors[middle], valid=False)
        twin_other = _insert(conn, -6, vectors[middle], symbol="ETH-PERP")
        got = {r[0] for r in conn.execute(sa.text("SELECT package_id FROM similar_setups(:p, 50)"), {"p": ids[middle]})}
    assert got and not got & {twin_later, twin_invalid, twin_other, ids[middle]}
    assert all(ids.index(g) < middle for g in got)


def test_summary_aggregates_validated_outcomes(engine, packages):
    ids, _ = packages
    with engine.begin() as conn:
        neighbours = [
            r[0] for r in conn.execute(sa.text("SELECT package_id FROM similar_setups(:p, 3)"), {"p": ids[-1]})
        ]
        for n, (profit, won) in zip(neighbours, [(0.02, True), (-0.01, False), (0.01, True)]):
            pid = conn.execute(
                sa.text(
                    "INSERT INTO predictions (prediction_key, package_id, model_kind, model_version, action, "
                    "confidence, horizon_s, predicted_at) VALUES (:k, :p, 'cnn', 'v1', 'long', 0.6, 300, now()) "
                    "RETURNING id"
                ),
                {"k": f"k{n}", "p": n},
            ).scalar()
            conn.execute(
                sa.text(
                    "INSERT INTO outcomes (prediction_id, status, actual_profit, profitability_score, optimal_action, "
                    "is_profitable, validated_at) VALUES (:p, 'validated', :profit, 0.5, 'long', :won, now())"
                ),
                {"p": pid, "profit": profit, "won": won},
            )
        summary = conn.execute(sa.text("SELECT * FROM similar_setups_summary(:p, 3)"), {"p": ids[-1]}).one()
    assert summary.neighbours == 3 and summary.validated_outcomes == 3
    assert summary.win_rate == pytest.approx(2 / 3)
    assert summary.mean_profit == pytest.approx(0.02 / 3)


@pytest.mark.parametrize("package_id, k, message", [(10**9, 5, "does not exist"), (None, 0, "k must be")])
def test_bad_arguments_are_named(engine, packages, package_id, k, message):
    ids, _ = packages
    with pytest.raises(DBAPIError) as err, engine.connect() as conn:
        conn.execute(sa.text("SELECT * FROM similar_setups(:p, :k)"), {"p": package_id or ids[5], "k": k})
    assert message in str(err.value.orig)
