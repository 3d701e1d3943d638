-- Outcome labelling (app/outcomes). Conventions and the score formula: docs/outcomes.md.
-- Bars are on the grid date_bin(bar, ts, epoch); a bar at ts covers [ts, ts + bar).

-- name: label_batch
-- Label the next batch of due predictions (id > :after_id) from the candles strictly inside their horizon; upsert outcomes.
WITH cand AS (
    -- Predictions whose horizon has fully elapsed at :as_of and that need (re)labelling.
    SELECT p.id, p.action, pk.symbol, o.status AS prior_status, w.first_ts, w.last_ts
    FROM predictions p
    JOIN input_packages pk ON pk.id = p.package_id
    LEFT JOIN outcomes o ON o.prediction_id = p.id
    CROSS JOIN LATERAL (
        SELECT
            -- first bar that opens strictly after the prediction time: its open is the entry
            date_bin(make_interval(secs => :bar_s), p.predicted_at, TIMESTAMPTZ '1970-01-01 00:00:00+00')
                + make_interval(secs => :bar_s) AS first_ts,
            -- last bar that closes at or before the horizon end: its close is the exit
            date_bin(make_interval(secs => :bar_s), p.predicted_at + make_interval(secs => p.horizon_s),
                     TIMESTAMPTZ '1970-01-01 00:00:00+00') - make_interval(secs => :bar_s) AS last_ts
    ) w
    WHERE p.id > :after_id
      AND p.predicted_at + make_interval(secs => p.horizon_s) <= :as_of
      AND (CAST(:symbol AS text) IS NULL OR pk.symbol = :symbol)
      AND (o.prediction_id IS NULL OR o.status = 'pending' OR :recheck
           OR EXISTS (SELECT 1 FROM candle_corrections cc
                      WHERE cc.id <= :corrections_upto AND cc.symbol = pk.symbol AND cc.timeframe = :timeframe
                        AND cc.from_ts <= w.last_ts AND cc.to_ts >= w.first_ts))
    ORDER BY p.id
    LIMIT :batch_size
),
windows AS (
    -- Many predictions share a window (several models, same minute): aggregate each window once.
    SELECT DISTINCT symbol, first_ts, last_ts FROM cand WHERE last_ts >= first_ts
),
window_stats AS (
    -- One index range scan per window; entry / exit are NULL when their bar is missing.
    SELECT w.symbol, w.first_ts, w.last_ts, agg.*
    FROM windows w
    CROSS JOIN LATERAL (
        SELECT count(*) AS bars, max(c.high) AS hi, min(c.low) AS lo,
               max(c.open) FILTER (WHERE c.ts = w.first_ts) AS entry_price,
               max(c.close) FILTER (WHERE c.ts = w.last_ts) AS exit_price
        FROM candles c
        WHERE c.symbol = w.symbol AND c.timeframe = :timeframe AND c.ts BETWEEN w.first_ts AND w.last_ts
    ) agg
),
covered AS (
    SELECT c.id, c.action, c.prior_status, s.entry_price, s.exit_price, s.hi, s.lo,
           CASE
               WHEN c.last_ts < c.first_ts THEN
                   format('horizon is shorter than one %s bar after the prediction time', CAST(:timeframe AS text))
               WHEN s.entry_price IS NULL OR s.exit_price IS NULL
                    OR s.bars < (extract(epoch FROM c.last_ts - c.first_ts) / :bar_s) + 1 THEN
                   format('gap in %s candles: %s of %s bars present from %s to %s', CAST(:timeframe AS text),
                          coalesce(s.bars, 0), (extract(epoch FROM c.last_ts - c.first_ts) / :bar_s)::bigint + 1,
                          to_char(c.first_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                          to_char(c.last_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
           END AS pending_reason
    FROM cand c
    LEFT JOIN window_stats s ON s.symbol = c.symbol AND s.first_ts = c.first_ts AND s.last_ts = c.last_ts
),
priced AS (
    -- Returns as fractions of the entry price; round-trip cost pays fee + slippage on entry and on exit.
    SELECT id, action, prior_status, pending_reason, entry_price, exit_price,
           exit_price / entry_price - 1 AS price_return,
           2 * (CAST(:fee_rate AS float8) + CAST(:slippage_rate AS float8)) AS cost,
           hi / entry_price - 1 AS up, 1 - lo / entry_price AS down
    FROM covered
),
labelled AS (
    SELECT id, action, prior_status, pending_reason, entry_price, exit_price, price_return, cost,
           CASE action WHEN 'long' THEN price_return - cost WHEN 'short' THEN -price_return - cost ELSE 0 END
               AS actual_profit,
           CASE WHEN price_return - cost > 0 THEN 'long' WHEN -price_return - cost > 0 THEN 'short' ELSE 'hold' END
               AS optimal_action,
           CASE action WHEN 'long' THEN greatest(up, 0) WHEN 'short' THEN greatest(down, 0) END AS mfe,
           CASE action WHEN 'long' THEN greatest(down, 0) WHEN 'short' THEN greatest(up, 0) END AS mae
    FROM priced
),
final AS (
    SELECT id, prior_status,
           CASE WHEN pending_reason IS NULL THEN 'validated' ELSE 'pending' END AS status,
           pending_reason,
           CASE WHEN pending_reason IS NULL THEN entry_price END AS entry_price,
           CASE WHEN pending_reason IS NULL THEN exit_price END AS exit_price,
           CASE WHEN pending_reason IS NULL THEN price_return END AS price_return,
           CASE WHEN pending_reason IS NULL THEN mfe END AS mfe,
           CASE WHEN pending_reason IS NULL THEN mae END AS mae,
           CASE WHEN pending_reason IS NULL THEN actual_profit END AS actual_profit,
           -- score = logistic(actual_profit / risk), risk = max(adverse excursion, round-trip cost, 1 bp)
           CASE WHEN pending_reason IS NULL THEN
               0.5 + 0.5 * tanh(actual_profit / greatest(coalesce(mae, 0), cost, 0.0001) / 2) END
               AS profitability_score,
           CASE WHEN pending_reason IS NULL THEN optimal_action END AS optimal_action,
           CASE WHEN pending_reason IS NULL THEN actual_profit > 0 END AS is_profitable
    FROM labelled
),
inserted AS (
    -- A plain insert is safe: labelling runs hold an advisory lock, and only they create outcomes.
    INSERT INTO outcomes (prediction_id, status, pending_reason, entry_price, exit_price, price_return,
                          max_favorable_excursion, max_adverse_excursion, actual_profit, profitability_score,
                          optimal_action, is_profitable, validated_at)
    SELECT id, status, pending_reason, entry_price, exit_price, price_return, mfe, mae, actual_profit,
           profitability_score, optimal_action, is_profitable, CASE WHEN status = 'validated' THEN now() END
    FROM final
    WHERE prior_status IS NULL
    RETURNING status
),
updated AS (
    -- Only rows whose result changed are written: an unchanged re-run touches nothing.
    UPDATE outcomes o SET
        status = f.status,
        pending_reason = f.pending_reason,
        entry_price = f.entry_price,
        exit_price = f.exit_price,
        price_return = f.price_return,
        max_favorable_excursion = f.mfe,
        max_adverse_excursion = f.mae,
        actual_profit = f.actual_profit,
        profitability_score = f.profitability_score,
        optimal_action = f.optimal_action,
        is_profitable = f.is_profitable,
        -- revision counts labels: replacing a validated label with a different one is a new revision
        revision = o.revision + CASE WHEN o.status = 'validated' THEN 1 ELSE 0 END,
        validated_at = CASE WHEN f.status = 'validated' THEN now() ELSE o.validated_at END,
        updated_at = now()
    FROM final f
    WHERE o.prediction_id = f.id AND f.prior_status IS NOT NULL
      AND (o.status, o.pending_reason, o.entry_price, o.exit_price, o.price_return, o.max_favorable_excursion,
           o.max_adverse_excursion, o.actual_profit, o.profitability_score, o.optimal_action, o.is_profitable)
          IS DISTINCT FROM
          (f.status, f.pending_reason, f.entry_price, f.exit_price, f.price_return, f.mfe, f.mae,
           f.actual_profit, f.profitability_score, f.optimal_action, f.is_profitable)
    RETURNING f.prior_status, o.status
)
SELECT
    (SELECT count(*) FROM cand) AS considered,
    (SELECT max(id) FROM cand) AS last_id,
    (SELECT count(*) FROM inserted WHERE status = 'validated')
        + (SELECT count(*) FROM updated WHERE status = 'validated' AND prior_status <> 'validated') AS validated,
    (SELECT count(*) FROM updated WHERE status = 'validated' AND prior_status = 'validated') AS relabelled,
    (SELECT count(*) FROM inserted WHERE status = 'pending') AS pending_new,
    (SELECT count(*) FROM updated WHERE status = 'pending') AS pending_changed;

-- name: batch_memory
-- Let one labelling batch sort and hash in memory (this transaction only).
SET LOCAL work_mem = '256MB';

-- name: corrections_upto
-- The newest candle-correction entry at the start of a run: the run handles entries up to it.
SELECT coalesce(max(id), 0) FROM candle_corrections;

-- name: clear_corrections
-- Forget handled candle-correction entries (of one symbol, or all when :symbol is null).
DELETE FROM candle_corrections
WHERE id <= :corrections_upto AND (CAST(:symbol AS text) IS NULL OR symbol = :symbol);

-- name: lock_labelling
-- Serialise labelling runs (several trainers may run validation jobs at once); held to commit.
SELECT pg_advisory_xact_lock(hashtext('trainsrv.outcomes.label'));

-- name: summary
-- Outcome counts by status, and how many labels were revised after corrected candles.
SELECT count(*) FILTER (WHERE status = 'validated') AS validated,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(*) FILTER (WHERE revision > 1) AS revised,
       count(*) FILTER (WHERE is_profitable) AS profitable
FROM outcomes;

-- name: stale_statistics
-- The tables labelling reads whose planner statistics are missing or behind their size (grown by more than 20 % + 8 pages since their last ANALYZE).
SELECT c.relname
FROM pg_class c
WHERE c.oid IN ('predictions'::regclass, 'input_packages'::regclass, 'outcomes'::regclass, 'candles'::regclass)
  AND (c.reltuples < 0 OR pg_relation_size(c.oid) / current_setting('block_size')::int > 1.2 * c.relpages + 8)
ORDER BY c.relname;

-- name: analyze_predictions
-- Refresh the planner's statistics of predictions: size and the columns labelling reads (owner or MAINTAIN only; others get a warning).
ANALYZE predictions (id, package_id, predicted_at, horizon_s);

-- name: analyze_input_packages
-- Refresh the planner's statistics of input_packages: size and the columns labelling reads, not the payloads (owner or MAINTAIN only).
ANALYZE input_packages (id, symbol);

-- name: analyze_outcomes
-- Refresh the planner's statistics of outcomes: size and the columns labelling reads (owner or MAINTAIN only; others get a warning).
ANALYZE outcomes (prediction_id, status);
