"""Similar-setup search over N embeddings: HNSW vs exact search, same run.

Target (issue 9): p50 <= 10 ms at recall@10 >= 0.95 over 1,000,000 embeddings.
Usage: python bench/bench_similar.py [--n 1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import sqlalchemy as sa
from common import bench_database, machine, percentile, summary

QUERY = sa.text("SELECT package_id FROM similar_setups(:p, 10)")


def synthetic_embeddings(n: int, dim: int = 32, clusters: int = 256, seed: int = 1) -> np.ndarray:
    """Clustered vectors: market setups repeat, so real embeddings are far from uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    labels = rng.integers(0, clusters, size=n)
    return (centres[labels] + 0.35 * rng.normal(size=(n, dim))).astype(np.float32)


def load(conn, vectors: np.ndarray) -> None:
    raw = conn.connection.driver_connection
    with (
        raw.cursor() as cur,
        cur.copy(
            "COPY input_packages (symbol, ts, payload, payload_format, data_hash, completeness_score, is_valid, "
            "embedding) FROM STDIN"
        ) as copy,
    ):
        buf = io.StringIO()
        for i, v in enumerate(vectors):
            vec = "[" + ",".join(f"{x:.5f}" for x in v) + "]"
            buf.write(f"BENCH\t2022-01-01 00:00:00+00\t\\\\x00\tbench\t\\\\x{i:064x}\t1\tt\t{vec}\n")
            if i % 50_000 == 49_999:
                copy.write(buf.getvalue())
                buf = io.StringIO()
        copy.write(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--m", type=int, default=32, help="HNSW m (the migration's index uses 32)")
    ap.add_argument("--ef-construction", type=int, default=128, help="HNSW ef_construction (migration: 128)")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    vectors = synthetic_embeddings(args.n)
    with bench_database() as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP INDEX ix_input_packages_embedding_hnsw"))
            t = time.perf_counter()
            load(conn, vectors)
            # Spread timestamps so every query has the whole earlier history to search.
            conn.execute(sa.text("UPDATE input_packages SET ts = '2022-01-01'::timestamptz + id * interval '1 second'"))
            print(f"loaded {args.n} embeddings in {time.perf_counter() - t:.1f} s")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            t = time.perf_counter()
            conn.execute(sa.text("SET maintenance_work_mem = '2GB'"))
            # Index options are integers from argparse; DDL takes no bind parameters.
            conn.execute(
                sa.text(
                    "CREATE INDEX ix_input_packages_embedding_hnsw ON input_packages USING hnsw "
                    f"(embedding vector_cosine_ops) WITH (m = {int(args.m)}, ef_construction = {int(args.ef_construction)})"
                )
            )
            conn.execute(sa.text("VACUUM ANALYZE input_packages"))
            print(
                f"built HNSW index (m={args.m}, ef_construction={args.ef_construction}) "
                f"in {time.perf_counter() - t:.1f} s"
            )
            rng = np.random.default_rng(2)
            # Queries from the newest half so each searches a large history.
            queries = [int(x) for x in rng.integers(args.n // 2, args.n, size=args.queries)]
            run(conn, queries)


def run(conn, queries: list[int]) -> None:
    conn.execute(sa.text("SET enable_indexscan = off"))
    exact, exact_ms = {}, []
    for q in queries:
        start = time.perf_counter()
        exact[q] = [r[0] for r in conn.execute(QUERY, {"p": q})]
        exact_ms.append((time.perf_counter() - start) * 1000)
    conn.execute(sa.text("RESET enable_indexscan"))
    print(f"exact search (sequential scan): {summary(exact_ms)}")
    for ef in (40, 100, 200, 400):
        conn.execute(sa.text("SELECT set_config('hnsw.ef_search', :ef, false)"), {"ef": str(ef)})
        for q in queries[:10]:  # warm the index pages
            conn.execute(QUERY, {"p": q})
        found, ms = {}, []
        for q in queries:
            start = time.perf_counter()
            found[q] = [r[0] for r in conn.execute(QUERY, {"p": q})]
            ms.append((time.perf_counter() - start) * 1000)
        recall = np.mean([len(set(found[q]) & set(exact[q])) / len(exact[q]) for q in queries])
        speedup = percentile(exact_ms, 50) / percentile(ms, 50)
        print(f"hnsw ef_search={ef}: recall@10 {recall:.3f}, {summary(ms)}, p50 speed-up vs exact {speedup:.0f}x")


if __name__ == "__main__":
    main()
