"""Outcome labelling and event detection support: a log of candle corrections, and an EWMA
aggregate for the volatility baseline.

Why the log: an outcome is labelled once its candles cover the horizon; when candles are later
corrected (re-ingested with different prices, or deleted and loaded again), the labels built on
them must be recomputed. Statement-level triggers on ``candles`` record the symbol, timeframe
and time range that changed in ``candle_corrections`` (one row per statement and series, so a
bulk load costs one row); the validator re-labels the outcomes whose windows overlap a logged
range and then clears the entries it handled. Updates that leave the prices as they were are not
logged, so an idempotent re-ingest triggers no work. Deletes are not logged: pruning old candles
must not un-validate outcomes that were computed from them.

Why the aggregate: the volatility-spike detector compares realised volatility against an
exponentially weighted moving average. ``trainsrv_ewma(x, alpha)`` used as a running window
aggregate (``ORDER BY ts ROWS UNBOUNDED PRECEDING``) computes it in one pass, set-based, with
no numeric overflow (a closed-form EWMA over tens of thousands of rows overflows float8).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TSTZ = sa.DateTime(timezone=True)


def upgrade():
    op.create_table(
        "candle_corrections",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("timeframe", sa.Text, nullable=False),
        sa.Column("from_ts", TSTZ, nullable=False),
        sa.Column("to_ts", TSTZ, nullable=False),
        sa.Column("row_count", sa.Integer, nullable=False),
        sa.Column("recorded_at", TSTZ, server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_candle_corrections"),
        sa.CheckConstraint("to_ts >= from_ts", name="ordered_bounds"),
        sa.CheckConstraint("row_count > 0", name="positive_row_count"),
    )
    op.execute("""
        CREATE FUNCTION candles_log_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO candle_corrections (symbol, timeframe, from_ts, to_ts, row_count)
            SELECT symbol, timeframe, min(ts), max(ts), count(*) FROM new_rows GROUP BY symbol, timeframe;
            RETURN NULL;
        END
        $$
    """)
    op.execute("""
        CREATE FUNCTION candles_log_updates() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- Only real price changes: an upsert that rewrites identical values logs nothing.
            INSERT INTO candle_corrections (symbol, timeframe, from_ts, to_ts, row_count)
            SELECT n.symbol, n.timeframe, min(n.ts), max(n.ts), count(*)
            FROM new_rows n JOIN old_rows o USING (symbol, timeframe, ts)
            WHERE (n.open, n.high, n.low, n.close) IS DISTINCT FROM (o.open, o.high, o.low, o.close)
            GROUP BY n.symbol, n.timeframe;
            RETURN NULL;
        END
        $$
    """)
    op.execute("""
        CREATE TRIGGER candles_log_inserts AFTER INSERT ON candles
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION candles_log_inserts()
    """)
    op.execute("""
        CREATE TRIGGER candles_log_updates AFTER UPDATE ON candles
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION candles_log_updates()
    """)
    op.execute("""
        CREATE FUNCTION trainsrv_ewma_step(state float8, x float8, alpha float8) RETURNS float8
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
            SELECT CASE WHEN x IS NULL THEN state
                        WHEN state IS NULL THEN x
                        ELSE state + alpha * (x - state) END
        $$
    """)
    op.execute("""
        CREATE AGGREGATE trainsrv_ewma(float8, float8) (SFUNC = trainsrv_ewma_step, STYPE = float8)
    """)


def downgrade():
    op.execute("DROP AGGREGATE trainsrv_ewma(float8, float8)")
    op.execute("DROP FUNCTION trainsrv_ewma_step(float8, float8, float8)")
    op.execute("DROP TRIGGER candles_log_updates ON candles")
    op.execute("DROP TRIGGER candles_log_inserts ON candles")
    op.execute("DROP FUNCTION candles_log_updates()")
    op.execute("DROP FUNCTION candles_log_inserts()")
    op.drop_table("candle_corrections")
