"""Migrations: round-trip, no drift between models and schema, views restored on downgrade."""

import sqlalchemy as sa

from app.db import migrate, views
from app.db.engine import make_engine


def _tables(engine):
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def _views(engine):
    return set(sa.inspect(engine).get_view_names())


def test_upgrade_downgrade_upgrade_round_trips(empty_db_url):
    engine = make_engine(empty_db_url)
    migrate.upgrade(engine)
    tables_at_head, views_at_head = _tables(engine), _views(engine)
    assert {
        "candles",
        "input_packages",
        "predictions",
        "outcomes",
        "market_events",
        "experiences",
        "training_sessions",
        "training_steps",
        "gradient_blobs",
        "checkpoints",
        "jobs",
    } <= tables_at_head
    assert "v_system_stats" in views_at_head

    migrate.downgrade(engine, "base")
    assert _tables(engine) == set()
    assert _views(engine) == set()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM pg_extension WHERE extname = 'vector'")).scalar() == 0

    migrate.upgrade(engine)
    assert _tables(engine) == tables_at_head
    assert _views(engine) == views_at_head
    assert migrate.current_revisions(engine) == migrate.head_revisions()
    engine.dispose()


def test_models_match_migrated_schema(engine):
    assert migrate.schema_drift(engine) == []


def test_drift_is_detected(engine):
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE jobs ADD COLUMN stray integer"))
    diffs = migrate.schema_drift(engine)
    assert any("stray" in str(d) for d in diffs)


def _newest_version(name: str) -> int:
    return max(int(p.stem[1:]) for p in views.path(name, 1).parent.glob("v*.sql"))


def _views_unlike_their_newest_file(conn) -> list[str]:
    """Views whose definition differs from their newest version file: each file is created beside the
    view (renamed out of the way, in a savepoint) and PostgreSQL's renderings of the two are compared."""
    names = conn.execute(sa.text("SELECT viewname FROM pg_views WHERE schemaname = current_schema()")).scalars()
    unlike = []
    for name in sorted(names):
        savepoint = conn.begin_nested()
        conn.execute(sa.text(f'ALTER VIEW "{name}" RENAME TO "{name}__head"'))
        conn.execute(sa.text(views.read(name, _newest_version(name))))
        from_file, at_head = conn.execute(
            sa.text("SELECT pg_get_viewdef(CAST(:a AS regclass)), pg_get_viewdef(CAST(:b AS regclass))"),
            {"a": name, "b": f"{name}__head"},
        ).one()
        savepoint.rollback()
        if from_file != at_head:
            unlike.append(name)
    return unlike


def test_every_view_version_file_is_used_by_head(engine):
    with engine.connect() as conn:
        assert _views_unlike_their_newest_file(conn) == []


def test_a_view_behind_its_newest_file_is_caught(engine):
    with engine.connect() as conn:
        conn.execute(sa.text(views.read("v_rl_replay_weights", 1).replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1)))
        assert _views_unlike_their_newest_file(conn) == ["v_rl_replay_weights"]
        conn.rollback()


def test_require_head_refuses_an_old_database(empty_db_url):
    engine = make_engine(empty_db_url)
    try:
        migrate.require_head(engine)
    except Exception as exc:  # noqa: BLE001 - the type and message are what we check
        assert type(exc).__name__ == "SchemaOutOfDate"
        assert "trainsrv db upgrade" in str(exc)
    else:
        raise AssertionError("an unmigrated database was accepted")
    finally:
        engine.dispose()
