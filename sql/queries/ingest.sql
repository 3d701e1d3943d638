-- Named queries of the ingest area (the write path's rules live in sql/functions/ingest).

-- name: package_payloads
-- Stored payload and hash of the given input packages (the caller re-verifies the hash).
SELECT id, payload, data_hash, payload_format
FROM input_packages
WHERE id = ANY(:ids)
ORDER BY id;

-- name: candles_between
-- Candles of one symbol and timeframe with open time in [since, until], oldest first.
SELECT extract(epoch FROM ts)::bigint AS t, open, high, low, close, volume
FROM candles
WHERE symbol = :symbol AND timeframe = :timeframe AND ts >= :since AND ts <= :until
ORDER BY ts;

-- name: record
-- Store a package and its prediction in one statement (validation, hash, idempotency in SQL).
SELECT package_id, prediction_id, is_valid, validation_flags, package_created, prediction_created
FROM ingest_record(CAST(:package AS jsonb), CAST(:prediction AS jsonb), CAST(:rules AS jsonb));

-- name: insert_package
-- Store one package (idempotent on its data_hash); returns its id and verdict.
SELECT package_id, data_hash, is_valid, completeness_score, validation_flags, created
FROM ingest_package(CAST(:package AS jsonb), CAST(:rules AS jsonb));

-- name: insert_prediction
-- Store one prediction (idempotent on prediction_key); returns its id.
SELECT prediction_id, created
FROM ingest_prediction(CAST(:prediction AS jsonb), CAST(:rules AS jsonb));

-- name: create_package_staging
-- Session-local staging table for bulk package ingest (COPY target).
CREATE TEMP TABLE IF NOT EXISTS ingest_package_staging (seq bigint NOT NULL, doc text NOT NULL)
ON COMMIT DELETE ROWS;

-- name: merge_package_staging
-- Run every staged document through ingest_package, in staging order.
SELECT s.seq, r.package_id, r.data_hash, r.is_valid, r.completeness_score, r.validation_flags, r.created
FROM ingest_package_staging s
CROSS JOIN LATERAL ingest_package(CAST(s.doc AS jsonb), CAST(:rules AS jsonb)) r
ORDER BY s.seq;

-- name: create_candle_staging
-- Session-local staging table for one candle file, raw text as read (COPY target).
CREATE TEMP TABLE IF NOT EXISTS ingest_candle_staging (
    line_no bigint NOT NULL, raw_ts text, raw_open text, raw_high text, raw_low text,
    raw_close text, raw_volume text
) ON COMMIT DROP;

-- name: classify_candle_staging
-- Parse and check every staged row; rows get a reject reason or typed values.
CREATE TEMP TABLE ingest_candle_checked ON COMMIT DROP AS
WITH parsed AS (
    SELECT line_no, raw_ts,
           CASE WHEN pg_input_is_valid(raw_ts, 'timestamptz') AND raw_ts !~* 'infinity'
                THEN raw_ts::timestamptz END AS ts,
           CASE WHEN pg_input_is_valid(raw_open, 'float8') THEN raw_open::float8 END AS open,
           CASE WHEN pg_input_is_valid(raw_high, 'float8') THEN raw_high::float8 END AS high,
           CASE WHEN pg_input_is_valid(raw_low, 'float8') THEN raw_low::float8 END AS low,
           CASE WHEN pg_input_is_valid(raw_close, 'float8') THEN raw_close::float8 END AS close,
           CASE WHEN pg_input_is_valid(raw_volume, 'float8') THEN raw_volume::float8 END AS volume
    FROM ingest_candle_staging
)
SELECT line_no, ts, open, high, low, close, volume,
       CASE
           WHEN ts IS NULL THEN 'unparsable time'
           WHEN num_nulls(open, high, low, close, volume) > 0 THEN 'unparsable number'
           WHEN greatest(open, high, low, close, volume) = 'Infinity'
                OR least(open, high, low, close, volume) = '-Infinity'
                OR 'NaN' IN (open, high, low, close, volume) THEN 'non-finite'
           WHEN volume < 0 THEN 'negative volume'
           WHEN low <= 0 THEN 'non-positive price'
           WHEN high < greatest(open, close) OR low > least(open, close) THEN 'OHLC inconsistent'
       END AS reason
FROM parsed;

-- name: candle_rejects
-- Rejected staged rows by reason: count and the first few line numbers.
SELECT reason, count(*) AS n, (array_agg(line_no ORDER BY line_no))[1:5] AS first_lines
FROM ingest_candle_checked
WHERE reason IS NOT NULL
GROUP BY reason
ORDER BY reason;

-- name: merge_candles
-- Insert the accepted rows (first occurrence of a time wins); count new, identical, conflicting.
WITH accepted AS (
    SELECT DISTINCT ON (ts) ts, open, high, low, close, volume
    FROM ingest_candle_checked
    WHERE reason IS NULL
    ORDER BY ts, line_no
), inserted AS (
    INSERT INTO candles (symbol, timeframe, ts, open, high, low, close, volume)
    SELECT :symbol, :timeframe, ts, open, high, low, close, volume FROM accepted
    ON CONFLICT (symbol, timeframe, ts) DO NOTHING
    RETURNING ts
)
SELECT
    (SELECT count(*) FROM ingest_candle_checked WHERE reason IS NULL) AS accepted,
    (SELECT count(*) FROM inserted) AS loaded,
    -- Only rows that were not inserted can conflict; the anti-join spares the index probes.
    (SELECT count(*) FROM accepted a JOIN candles c
        ON c.symbol = :symbol AND c.timeframe = :timeframe AND c.ts = a.ts
     WHERE NOT EXISTS (SELECT 1 FROM inserted i WHERE i.ts = a.ts)
       AND (c.open, c.high, c.low, c.close, c.volume) IS DISTINCT FROM (a.open, a.high, a.low, a.close, a.volume)
    ) AS conflicts,
    (SELECT min(ts) FROM accepted) AS first_ts,
    (SELECT max(ts) FROM accepted) AS last_ts;

-- name: candle_gaps
-- Holes in the stored series of one symbol / timeframe between two times (step in seconds).
SELECT prev_ts AS after_ts, ts AS before_ts,
       (extract(epoch FROM ts - prev_ts)::bigint / :step_s) - 1 AS missing_bars
FROM (
    SELECT ts, lag(ts) OVER (ORDER BY ts) AS prev_ts
    FROM candles
    WHERE symbol = :symbol AND timeframe = :timeframe AND ts BETWEEN :first_ts AND :last_ts
) s
WHERE ts - prev_ts > make_interval(secs => :step_s)
ORDER BY ts;
