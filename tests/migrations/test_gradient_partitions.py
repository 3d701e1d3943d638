"""Migration 0013 converts a database holding gradients in place (one partition per session) and back."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from app.db import migrate
from app.db.engine import make_engine

BEFORE = migrate.previous_revision("0013")  # the plain gradient_blobs
SESSION = (
    "INSERT INTO training_sessions (model_kind, model_name, config, seed, torch_version, trainsrv_version, "
    "device, capture_policy, replay_exact) VALUES ('cnn', 'pivot_cnn', '{\"symbol\": \"BTC-PERP\"}', 1, "
    "'2', '0', 'cpu', 'full', true) RETURNING id"
)
BLOB = (
    "INSERT INTO gradient_blobs (session_id, step, param_name, chunk_index, chunk_count, dtype, shape, codec, "
    "byte_length, checksum, data) VALUES (:s, :step, :p, 0, 1, 'float32', '{2}', 'raw', 8, sha256(:d), :d)"
)
CHECKPOINT = (
    "INSERT INTO checkpoints (session_id, step, kind, params_hash, optimizer_hash, content_hash, "
    "byte_length, state) VALUES (:s, 0, 'start', sha256('\\x01'), sha256('\\x02'), sha256('\\x03'), 1, "
    "'\\x03')"
)


def _add_session(conn, steps: int = 3) -> int:
    sid = conn.execute(sa.text(SESSION)).scalar_one()
    conn.execute(sa.text(CHECKPOINT), {"s": sid})
    for step in range(1, steps + 1):
        for p in ("conv.weight", "fc.bias"):
            conn.execute(
                sa.text(BLOB),
                {"s": sid, "step": step, "p": p, "d": hashlib.sha256(f"{sid}{step}{p}".encode()).digest()[:8]},
            )
    return sid


def _blobs(engine) -> list[tuple]:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT session_id, step, param_name, chunk_index, data, checksum "
                "FROM gradient_blobs ORDER BY 1, 2, 3, 4"
            )
        ).all()


def _relkind(engine, name: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:n)"), {"n": name}).scalar()


def _partitions(engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(
            conn.execute(sa.text("SELECT relid::text FROM pg_partition_tree('gradient_blobs') WHERE isleaf")).scalars()
        )


def test_upgrade_partitions_existing_gradients_and_downgrade_flattens_them(empty_db_url):
    engine = make_engine(empty_db_url)
    try:
        migrate.upgrade(engine, BEFORE)
        with engine.begin() as conn:
            old = [_add_session(conn) for _ in range(2)]
        flat = _blobs(engine)
        assert len(flat) == 12 and _relkind(engine, "gradient_blobs") == "r"

        migrate.upgrade(engine)
        assert _relkind(engine, "gradient_blobs") == "p"
        assert _partitions(engine) == sorted(f"gradient_blobs_s{s}" for s in old)
        assert _blobs(engine) == flat
        with engine.begin() as conn:
            new = _add_session(conn)  # its partition comes from the insert trigger
            conn.execute(sa.text("SELECT gradient_blobs_drop_partition(:s)"), {"s": old[0]})
            conn.execute(
                sa.text(
                    "UPDATE training_sessions SET replay_exact = false, pruned = 'gradients', "
                    "pruned_at = now(), pruned_reason = 'test' WHERE id = :s"
                ),
                {"s": old[0]},
            )
        at_head = _blobs(engine)
        assert {r.session_id for r in at_head} == {old[1], new}

        migrate.downgrade(engine, BEFORE)
        assert _relkind(engine, "gradient_blobs") == "r" and _blobs(engine) == at_head
        assert _relkind(engine, f"gradient_blobs_s{new}") is None
        with engine.connect() as conn:
            exact = dict(conn.execute(sa.text("SELECT id, replay_exact FROM training_sessions")).all())
        assert exact == {old[0]: False, old[1]: True, new: True}  # pruned stays not replay-exact

        migrate.upgrade(engine)
        assert _blobs(engine) == at_head
        assert _partitions(engine) == sorted(f"gradient_blobs_s{s}" for s in (*old, new))
        assert migrate.schema_drift(engine) == []
    finally:
        engine.dispose()
