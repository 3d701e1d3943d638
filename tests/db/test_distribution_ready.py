"""The schema stays ready to be distributed by session on Citus (docs/scaling.md).

Distributed by ``session_id`` and colocated: the per-step tables. Reference table (copied to every node):
``training_sessions``. Everything else stays on the coordinator (a Citus local table). Citus enforces a
primary or unique key of a distributed table only when it contains the distribution column, and a foreign
key from a distributed table only to a reference table or, on the distribution columns, to a colocated
distributed table; nothing else may reference a distributed table. The exceptions are named in ``KNOWN``.
"""

from __future__ import annotations

import sqlalchemy as sa

DISTRIBUTED = {"training_steps": "session_id", "gradient_blobs": "session_id", "checkpoints": "session_id"}
# Small tables keyed by a session: copied to every node. model_deployments is the model registry's (issue 17).
REFERENCE = {"training_sessions", "model_deployments"}
# The keys a distribution by session would change, by name, with what changes then (docs/scaling.md). Nothing
# else may break the rules; a name listed here that the schema lacks excuses nothing.
KNOWN = {
    "pk_checkpoints": "checkpoints(id) becomes (session_id, id); kept while training_sessions.init_checkpoint_id "
    "(the model registry) references checkpoints(id)",
    "fk_training_sessions_init_checkpoint_id_checkpoints": "a reference table cannot reference a distributed one: "
    "on Citus the init checkpoint is checked by the recorder",
}

KEYS = """
SELECT c.relname AS table_name, i.indexrelid::regclass::text AS key_name,
       array(SELECT a.attname FROM unnest(i.indkey) k JOIN pg_attribute a
             ON a.attrelid = i.indrelid AND a.attnum = k) AS columns
FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
WHERE i.indisunique AND c.relnamespace = current_schema()::regnamespace AND NOT c.relispartition
"""
FOREIGN_KEYS = """
SELECT f.conname, src.relname AS src, dst.relname AS dst,
       array(SELECT a.attname FROM unnest(f.conkey) k JOIN pg_attribute a
             ON a.attrelid = f.conrelid AND a.attnum = k) AS src_columns,
       array(SELECT a.attname FROM unnest(f.confkey) k JOIN pg_attribute a
             ON a.attrelid = f.confrelid AND a.attnum = k) AS dst_columns
FROM pg_constraint f
JOIN pg_class src ON src.oid = f.conrelid
JOIN pg_class dst ON dst.oid = f.confrelid
WHERE f.contype = 'f' AND src.relnamespace = current_schema()::regnamespace
  AND NOT src.relispartition AND f.conparentid = 0
"""


def _rows(engine, query: str):
    with engine.connect() as conn:
        return conn.execute(sa.text(query)).all()


def key_violations(engine) -> list[str]:
    """Primary / unique keys of distributed tables without the distribution column."""
    return [
        f"{r.key_name} on {r.table_name}({', '.join(r.columns)}) lacks {DISTRIBUTED[r.table_name]}"
        for r in _rows(engine, KEYS)
        if r.table_name in DISTRIBUTED and DISTRIBUTED[r.table_name] not in r.columns and r.key_name not in KNOWN
    ]


def foreign_key_violations(engine) -> list[str]:
    """Foreign keys Citus could not enforce with this layout."""
    found = []
    for r in _rows(engine, FOREIGN_KEYS):
        if r.conname in KNOWN:
            continue
        if r.dst in DISTRIBUTED and not (
            r.src in DISTRIBUTED and r.src_columns == [DISTRIBUTED[r.src]] and r.dst_columns == [DISTRIBUTED[r.dst]]
        ):
            found.append(f"{r.conname}: {r.src} -> {r.dst} is not between colocated distribution columns")
        elif r.src in DISTRIBUTED and r.dst not in DISTRIBUTED and r.dst not in REFERENCE:
            found.append(f"{r.conname}: distributed {r.src} -> {r.dst}, which is neither reference nor distributed")
    return found


def test_keys_of_distributed_tables_hold_the_distribution_column(engine):
    assert key_violations(engine) == []


def test_no_foreign_key_citus_could_not_enforce(engine):
    assert foreign_key_violations(engine) == []


def test_every_per_session_table_is_listed(engine):
    # A new table keyed by a session belongs with the distributed ones (or the list says otherwise).
    keyed = {
        r.src for r in _rows(engine, FOREIGN_KEYS) if r.dst == "training_sessions" and r.src != "training_sessions"
    }
    assert set(DISTRIBUTED) <= keyed <= set(DISTRIBUTED) | REFERENCE


def test_the_known_exceptions_are_the_only_ones(engine):
    # Today's one: the checkpoints key (docs/scaling.md says what a distribution changes).
    found = [r.key_name for r in _rows(engine, KEYS) if r.table_name == "checkpoints" and "session_id" not in r.columns]
    assert found == ["pk_checkpoints"] and set(found) <= set(KNOWN)


def test_the_checks_catch_violations(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE training_steps ADD COLUMN stray bigint UNIQUE"))
        conn.execute(
            sa.text(
                "CREATE TABLE stray_notes (id bigint PRIMARY KEY, session_id bigint, step int, "
                "FOREIGN KEY (session_id, step) REFERENCES training_steps (session_id, step))"
            )
        )
        conn.execute(sa.text("ALTER TABLE checkpoints ADD COLUMN job_id bigint REFERENCES jobs (id)"))
    assert key_violations(engine) == ["training_steps_stray_key on training_steps(stray) lacks session_id"]
    problems = foreign_key_violations(engine)
    assert len(problems) == 2
    assert any("stray_notes -> training_steps" in p for p in problems)
    assert any("distributed checkpoints -> jobs" in p for p in problems)
