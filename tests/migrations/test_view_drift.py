"""trainsrv db check notices views and functions that no longer match their newest versioned files."""

import sqlalchemy as sa

from app.db import drift

EDIT_BODY = """
DO $$ DECLARE d text; BEGIN
    SELECT pg_get_functiondef('similar_setups_summary(bigint, integer)'::regprocedure) INTO d;
    EXECUTE replace(d, 'AS $function$', 'AS $function$ -- edited by hand' || chr(10));
END $$"""


def test_a_migrated_database_has_no_drift(engine):
    assert drift.problems(engine) == []


def test_a_view_replaced_by_hand_is_drift(engine):
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                drift.newest("views")["v_system_stats"]
                .replace("CREATE VIEW", "CREATE OR REPLACE VIEW")
                .replace("> 1000", "> 5000")
            )
        )
    assert drift.problems(engine) == [
        "view v_system_stats: definition differs from its newest file (sql/views/v_system_stats)"
    ]


def test_an_edited_function_body_and_a_missing_view_are_drift(engine):
    with engine.begin() as conn:
        conn.execute(sa.text(EDIT_BODY))
        conn.execute(sa.text("DROP VIEW v_setup_candles"))
    assert drift.problems(engine) == [
        "view v_setup_candles is missing (sql/views/v_setup_candles)",
        "function similar_setups_summary(query_package_id bigint, k integer): body differs from its newest file",
    ]


def test_the_check_changes_nothing(engine):
    with engine.connect() as conn:
        before = conn.execute(sa.text("SELECT count(*) FROM pg_class WHERE relkind = 'v'")).scalar()
    drift.problems(engine)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_class WHERE relkind = 'v'")).scalar() == before
