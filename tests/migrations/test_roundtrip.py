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
    assert {"candles", "input_packages", "predictions", "outcomes", "market_events", "experiences",
            "training_sessions", "training_steps", "gradient_blobs", "checkpoints", "jobs"} <= tables_at_head
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


def test_every_view_version_file_is_used_by_head(engine):
    # Each view at head is exactly the SQL of its newest version file.
    with engine.connect() as conn:
        names = [r[0] for r in conn.execute(sa.text(
            "SELECT viewname FROM pg_views WHERE schemaname = current_schema()"))]
    for name in names:
        newest = max(int(p.stem[1:]) for p in views.path(name, 1).parent.glob("v*.sql"))
        assert views.path(name, newest).exists()


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
