"""Job queue wake-up: NOTIFY on every newly queued job, and an index for "ever enqueued" checks.

Why: idle trainers wait on ``LISTEN trainsrv_jobs`` instead of polling hard, so a job starts
within milliseconds of being queued, whoever inserts it (the CLI, a handler, the orchestrator
in plain SQL). The trigger fires on insert and whenever a job goes back to ``queued`` (retry,
rescue, release). Polling stays as the fallback: a lost notification only delays a job.

The scheduler enqueues threshold-triggered training once per crossing by checking whether a
job with that dedupe key was *ever* enqueued (any state); ``ix_jobs_dedupe_key`` keeps that
check an index lookup however long the job history grows. (``uq_jobs_dedupe_key_active`` from
0001 only covers queued / running rows.)
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CHANNEL = "trainsrv_jobs"


def upgrade():
    op.execute(f"""
        CREATE FUNCTION jobs_notify_queued() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- The payload is the kind, so a bulk insert of one kind sends one notification
            -- (PostgreSQL folds identical notifications within a transaction).
            PERFORM pg_notify('{CHANNEL}', NEW.kind);
            RETURN NULL;
        END
        $$
    """)
    op.execute("""
        CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
        FOR EACH ROW WHEN (NEW.state = 'queued') EXECUTE FUNCTION jobs_notify_queued()
    """)
    op.execute("""
        CREATE TRIGGER jobs_notify_requeue AFTER UPDATE OF state ON jobs
        FOR EACH ROW WHEN (NEW.state = 'queued' AND OLD.state <> 'queued') EXECUTE FUNCTION jobs_notify_queued()
    """)
    op.create_index("ix_jobs_dedupe_key", "jobs", ["dedupe_key"], postgresql_where=sa.text("dedupe_key IS NOT NULL"))


def downgrade():
    op.drop_index("ix_jobs_dedupe_key", table_name="jobs")
    op.execute("DROP TRIGGER jobs_notify_requeue ON jobs")
    op.execute("DROP TRIGGER jobs_notify_insert ON jobs")
    op.execute("DROP FUNCTION jobs_notify_queued()")
