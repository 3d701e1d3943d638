"""Every view and view column describes itself (COMMENT ON) from the one source docs/analysts.md is
generated from (sql/views/catalog.toml)."""

import sqlalchemy as sa

from app.db import catalog


def test_every_view_column_has_the_comment_of_the_source(engine):
    with engine.connect() as conn:
        found = catalog.problems(conn)
    assert found == [], (
        "add a line per column to sql/views/catalog.toml (and comment it in a migration):\n" + "\n".join(found)
    )


def test_comments_show_where_psql_and_grafana_look(engine):
    with engine.connect() as conn:
        view = conn.execute(sa.text("SELECT obj_description('v_profitable_setups'::regclass, 'pg_class')")).scalar()
        column = conn.execute(
            sa.text(
                "SELECT col_description('v_profitable_setups'::regclass, attnum) FROM pg_attribute "
                "WHERE attrelid = 'v_profitable_setups'::regclass AND attname = 'predicted_move'"
            )
        ).scalar()
    assert view.startswith("v_profitable_setups — what analysts read first.")
    assert column == catalog.load()["v_profitable_setups"]["columns"]["predicted_move"]


def test_an_uncommented_view_column_is_caught(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE VIEW v_stray AS SELECT 1 AS x"))
        conn.execute(sa.text("ALTER VIEW v_profitable_setups RENAME COLUMN horizon_end TO horizon_stop"))
        found = catalog.problems(conn)
        conn.rollback()
    assert "view v_stray is not described in catalog.toml" in found
    assert "column v_stray.x has no line in catalog.toml" in found
    assert "column v_profitable_setups.horizon_stop has no line in catalog.toml" in found


def test_a_changed_text_in_the_source_is_caught(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("COMMENT ON COLUMN v_setup_candles.phase IS 'stale'"))
        assert catalog.problems(conn) == ["column v_setup_candles.phase: comment differs from catalog.toml"]


def test_the_docs_are_generated_from_the_source():
    current = catalog.DOC.read_text()
    assert catalog.render_doc(current) == current, "docs/analysts.md is stale: python -m app.db.catalog --write"
    for name, entry in catalog.load().items():
        if entry.get("analyst"):
            assert f"## {name} — " in current
            assert all(f"| {column} |" in current for column in entry["columns"])


def test_every_analyst_view_is_readable_by_the_analyst_role(engine):
    with engine.connect() as conn:
        readable = {
            r[0]
            for r in conn.execute(
                sa.text(
                    "SELECT c.relname FROM pg_class c WHERE c.relkind = 'v' AND c.relname LIKE 'v\\_%' "
                    "AND has_table_privilege('trainsrv_analyst', c.oid, 'SELECT')"
                )
            )
        }
    assert {n for n, e in catalog.load().items() if e.get("analyst")} <= readable
