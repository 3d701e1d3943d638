-- Ingest functions, version 1: the one place where input packages and predictions are
-- checked, hashed and stored. The Python client (app.client) calls these same functions, so
-- an orchestrator in any language gets the same validation, hashing and idempotency.
-- Errors a caller must fix raise SQLSTATE 22023 with the message "<field>: <problem>" and the
-- field in the error's COLUMN; nothing is stored by a failing call. See docs/ingest.md.

-- The rules a call uses unless it passes its own in p_rules (app.config.Settings defaults).
CREATE FUNCTION ingest_default_rules() RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT jsonb_build_object(
    'min_data_completeness', 0.8,
    'max_clock_skew_s', 5.0,
    'max_payload_bytes', 16777216,
    'required_fields', jsonb_build_array(
      'ohlcv.1m', 'ohlcv.5m', 'ohlcv.15m', 'ohlcv.1h',
      'features.returns_1m', 'features.rsi_14', 'features.ema_ratio_12_26',
      'features.volatility_20', 'features.volume_z_20', 'orderbook'))
$fn$;

CREATE FUNCTION ingest_reject(p_field text, p_problem text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
  RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = p_field || ': ' || p_problem, COLUMN = p_field;
END
$fn$;

-- Seconds in one bar of a timeframe label such as 1m, 15m, 1h (NULL when malformed).
CREATE FUNCTION ingest_timeframe_s(p_timeframe text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
  SELECT nullif(substring(p_timeframe FROM '^([0-9]+)[smhdw]$')::integer, 0)
         * CASE right(p_timeframe, 1) WHEN 's' THEN 1 WHEN 'm' THEN 60 WHEN 'h' THEN 3600
                                      WHEN 'd' THEN 86400 WHEN 'w' THEN 604800 END
$fn$;

-- An ISO 8601 time string that carries its UTC offset ("...Z" or "...+02:00").
CREATE FUNCTION ingest_time(p_field text, p_value jsonb) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
  s text := p_value #>> '{}';
BEGIN
  IF p_value IS NULL OR jsonb_typeof(p_value) <> 'string'
     OR s !~ '[0-9](Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$' OR NOT pg_input_is_valid(s, 'timestamptz') THEN
    PERFORM ingest_reject(p_field, format('must be an ISO 8601 time with a UTC offset, got %s',
                                          coalesce(p_value::text, 'nothing')));
  END IF;
  RETURN s::timestamptz;
END
$fn$;

-- Problem with a flat array of numbers (non-finite tokens allowed), or NULL when it is fine.
-- One jsonpath pass: every element must be a number inside the float64 range, or one of the
-- strings "NaN", "Infinity", "-Infinity".
CREATE FUNCTION ingest_flat_problem(p_value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT CASE
    WHEN jsonb_typeof(p_value) IS DISTINCT FROM 'array' THEN 'must be an array of numbers'
    WHEN jsonb_path_exists(p_value, 'strict $[*] ? (!(@.type() == "number" && @ <= 1.7976931348623157e308
           && @ >= -1.7976931348623157e308 && (@ == 0 || @ >= 4.9e-324 || @ <= -4.9e-324))
           && !(@.type() == "string" && (@ == "NaN" || @ == "Infinity" || @ == "-Infinity")))')
      THEN 'must hold only numbers in the float64 range (or "NaN", "Infinity", "-Infinity")'
  END
$fn$;

-- Problem with a 1-D or rectangular 2-D array of numbers, or NULL when it is fine.
CREATE FUNCTION ingest_matrix_problem(p_value jsonb, p_width integer DEFAULT NULL) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
  IF jsonb_typeof(p_value) IS DISTINCT FROM 'array' THEN
    RETURN 'must be an array of numbers';
  END IF;
  IF p_width IS NULL AND NOT jsonb_path_exists(p_value, 'strict $[*] ? (@.type() == "array")') THEN
    RETURN ingest_flat_problem(p_value);
  END IF;
  IF jsonb_path_exists(p_value, 'strict $[*] ? (@.type() != "array")') THEN
    RETURN 'must be a 2-D array (every row an array)';
  END IF;
  p_width := coalesce(p_width, jsonb_array_length(p_value -> 0));
  IF jsonb_path_exists(p_value, 'strict $[*] ? (@.size() != $w)', jsonb_build_object('w', p_width)) THEN
    RETURN format('every row must hold %s values', p_width);
  END IF;
  IF jsonb_path_exists(p_value, 'strict $[*][*] ? (!(@.type() == "number" && @ <= 1.7976931348623157e308
       && @ >= -1.7976931348623157e308 && (@ == 0 || @ >= 4.9e-324 || @ <= -4.9e-324))
       && !(@.type() == "string" && (@ == "NaN" || @ == "Infinity" || @ == "-Infinity")))') THEN
    RETURN 'must hold only numbers in the float64 range (or "NaN", "Infinity", "-Infinity")';
  END IF;
  RETURN NULL;
END
$fn$;

-- Refuse a document whose structure is wrong (unknown keys, wrong types, ragged arrays, ...).
CREATE FUNCTION ingest_check_structure(p jsonb) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
  k text;
  v jsonb;
  problem text;
BEGIN
  IF jsonb_typeof(p) IS DISTINCT FROM 'object' THEN
    PERFORM ingest_reject('package', 'must be a JSON object');
  END IF;
  SELECT key INTO k FROM jsonb_object_keys(p) key
   WHERE key NOT IN ('symbol', 'ts', 'ohlcv', 'windows', 'features', 'orderbook', 'hidden_state', 'metadata')
   LIMIT 1;
  IF k IS NOT NULL THEN
    PERFORM ingest_reject(k, 'unknown field (expected symbol, ts, ohlcv, windows, features, orderbook, '
                             'hidden_state, metadata)');
  END IF;
  -- Market symbols are printable ASCII without spaces ("BTC-PERP", "BTC/USDT"); a blank or
  -- whitespace-only symbol would store a package that cannot be decoded again.
  IF jsonb_typeof(p -> 'symbol') IS DISTINCT FROM 'string' OR (p ->> 'symbol') !~ '^[!-~]+$' THEN
    PERFORM ingest_reject('symbol', 'required: a non-empty string of printable ASCII without spaces');
  END IF;
  FOREACH k IN ARRAY ARRAY['ohlcv', 'windows', 'features', 'metadata'] LOOP
    IF p ? k AND jsonb_typeof(p -> k) <> 'object' THEN
      PERFORM ingest_reject(k, 'must be an object');
    END IF;
  END LOOP;
  FOR k, v IN SELECT key, value FROM jsonb_each(coalesce(p -> 'ohlcv', '{}')) LOOP
    PERFORM ingest_check_window(k, v);
  END LOOP;
  FOR k, v IN SELECT key, value FROM jsonb_each(coalesce(p -> 'windows', '{}')) LOOP
    IF jsonb_typeof(v) <> 'number' OR v::text !~ '^[0-9]{1,7}$' OR v::text::numeric NOT BETWEEN 1 AND 1000000 THEN
      PERFORM ingest_reject('windows.' || k, format('must be a positive integer, got %s', v));
    END IF;
  END LOOP;
  FOR k, v IN SELECT key, value FROM jsonb_each(coalesce(p -> 'features', '{}')) LOOP
    problem := ingest_flat_problem(v);
    IF problem IS NOT NULL THEN
      PERFORM ingest_reject('features.' || k, problem);
    END IF;
  END LOOP;
  FOREACH k IN ARRAY ARRAY['orderbook', 'hidden_state'] LOOP
    IF jsonb_typeof(p -> k) NOT IN ('null') THEN
      problem := ingest_matrix_problem(p -> k);
      IF problem IS NOT NULL THEN
        PERFORM ingest_reject(k, problem);
      END IF;
    END IF;
  END LOOP;
END
$fn$;

-- One OHLCV window: {"t": [epoch seconds...], "bars": [[o, h, l, c, v], ...]} of equal length.
CREATE FUNCTION ingest_check_window(p_timeframe text, w jsonb) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
  field text := 'ohlcv.' || p_timeframe;
  problem text;
BEGIN
  IF ingest_timeframe_s(p_timeframe) IS NULL THEN
    PERFORM ingest_reject(field, 'not a timeframe like 1m, 5m, 1h or 1d');
  END IF;
  IF jsonb_typeof(w) <> 'object' OR NOT (w ?& ARRAY['t', 'bars'])
     OR EXISTS (SELECT 1 FROM jsonb_object_keys(w) key WHERE key NOT IN ('t', 'bars')) THEN
    PERFORM ingest_reject(field, 'must be an object {"t": [...], "bars": [[o, h, l, c, v], ...]}');
  END IF;
  problem := ingest_flat_problem(w -> 't');
  IF problem IS NULL AND jsonb_path_exists(w -> 't', 'strict $[*] ? (@.type() != "number")') THEN
    problem := 'bar times must be epoch seconds, not "NaN" / "Infinity"';
  ELSIF jsonb_path_exists(w -> 't', 'strict $[*] ? (@ > 1e15 || @ < -1e15)') THEN
    problem := 'bar times must be epoch seconds (|t| <= 1e15)';
  END IF;
  IF problem IS NOT NULL THEN
    PERFORM ingest_reject(field || '.t', problem);
  END IF;
  IF jsonb_typeof(w -> 'bars') <> 'array' THEN
    PERFORM ingest_reject(field || '.bars', 'must be an array of [open, high, low, close, volume] rows');
  END IF;
  problem := ingest_matrix_problem(w -> 'bars', 5);
  IF problem IS NOT NULL THEN
    PERFORM ingest_reject(field || '.bars', problem || ' [open, high, low, close, volume]');
  END IF;
  IF jsonb_array_length(w -> 't') <> jsonb_array_length(w -> 'bars') THEN
    PERFORM ingest_reject(field, format('%s bar times for %s bars', jsonb_array_length(w -> 't'),
                                        jsonb_array_length(w -> 'bars')));
  END IF;
END
$fn$;

-- True when every part of a defaults-filled document has the right type and shape: one
-- jsonpath pass over the items, then a look at the window keys (plain SQL: a cached regex is
-- cheaper than jsonpath's keyvalue()). NULL or false sends the document to
-- ingest_check_structure, which names the field. Bar times and bar values must also be in the
-- float64 range (as ingest_check_structure demands), so that ingest_assess, which parses them as
-- float8, cannot fail on a well-formed document.
CREATE FUNCTION ingest_well_formed(p jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT CASE WHEN coalesce(jsonb_path_match(p, 'strict
      $.ohlcv.type() == "object" && $.features.type() == "object" && $.windows.type() == "object"
      && $.metadata.type() == "object" && $.symbol.type() == "string" && $.symbol like_regex "^[!-~]+$"
      && !exists($.ohlcv.* ? (@.type() != "object" || @.t.size() != @.bars.size()))
      && !exists($.ohlcv.*.t[*] ? (@.type() != "number" || @ > 1e15 || @ < -1e15
           || (@ != 0 && @ < 4.9e-324 && @ > -4.9e-324)))
      && !exists($.ohlcv.*.bars[*] ? (@.size() != 5))
      && !exists($.ohlcv.*.bars[*][*] ? (@.type() == "number"
           && !((@ >= 4.9e-324 && @ <= 1.7976931348623157e308) || @ == 0
                || (@ <= -4.9e-324 && @ >= -1.7976931348623157e308))))
      && !exists($.ohlcv.*.bars[*][*] ? (@.type() != "number"
           && (@.type() != "string" || (@ != "NaN" && @ != "Infinity" && @ != "-Infinity"))))
      && !exists($.windows.* ? (@.type() != "number" || @ < 1 || @ > 1000000 || @.floor() != @))
      && !exists($.features.*[*] ? (@.type() != "number"
           && (@.type() != "string" || (@ != "NaN" && @ != "Infinity" && @ != "-Infinity"))))
      && ($.orderbook.type() == "null" || ($.orderbook.type() == "array"
           && ((!exists($.orderbook[*] ? (@.type() == "array"))
                && !exists($.orderbook[*] ? (@.type() != "number"
                     && (@.type() != "string" || (@ != "NaN" && @ != "Infinity" && @ != "-Infinity")))))
               || (!exists($.orderbook[*] ? (@.type() != "array" || @.size() != $.orderbook[0].size()))
                && !exists($.orderbook[*][*] ? (@.type() != "number"
                     && (@.type() != "string" || (@ != "NaN" && @ != "Infinity" && @ != "-Infinity"))))))))
      && ($.hidden_state.type() == "null" || ($.hidden_state.type() == "array"
           && ((!exists($.hidden_state[*] ? (@.type() == "array"))
                && !exists($.hidden_state[*] ? (@.type() != "number"
                     && (@.type() != "string" || (@ != "NaN" && @ != "Infinity" && @ != "-Infinity")))))
               || (!exists($.hidden_state[*] ? (@.type() != "array" || @.size() != $.hidden_state[0].size()))
                && !exists($.hidden_state[*][*] ? (@.type() != "number"
                     && (@.type() != "string" || (@ != "NaN" && @ != "Infinity" && @ != "-Infinity"))))))))',
    silent => true), false)
  THEN NOT EXISTS (SELECT 1 FROM jsonb_each(p -> 'ohlcv') e
                    WHERE e.key !~ '^0*[1-9][0-9]*[smhdw]$'
                       OR EXISTS (SELECT 1 FROM jsonb_object_keys(e.value) k WHERE k NOT IN ('t', 'bars')))
  ELSE false END
$fn$;

-- The document in canonical shape: optional parts filled with their defaults, ts in UTC
-- written as YYYY-MM-DDTHH:MI:SS.ffffffZ, windows declared from the actual lengths if absent.
-- Refuses a malformed document with an error naming the field.
CREATE FUNCTION ingest_normalise(p jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
  ts timestamptz;
  doc jsonb;
BEGIN
  IF jsonb_typeof(p) IS DISTINCT FROM 'object' THEN
    PERFORM ingest_reject('package', 'must be a JSON object');
  END IF;
  ts := ingest_time('ts', p -> 'ts');
  IF p ?& ARRAY['ohlcv', 'windows', 'features', 'orderbook', 'hidden_state', 'metadata']
     AND p ->> 'ts' = to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') THEN
    doc := p;  -- already canonical in shape (the Python client's form): skip the rebuild
  ELSE
    doc := jsonb_build_object(
           'ohlcv', '{}'::jsonb, 'features', '{}'::jsonb, 'metadata', '{}'::jsonb,
           'orderbook', NULL, 'hidden_state', NULL,
           'windows', (SELECT coalesce(jsonb_object_agg(key, jsonb_array_length(value -> 'bars')), '{}')
                         FROM jsonb_each(CASE jsonb_typeof(p -> 'ohlcv') WHEN 'object' THEN p -> 'ohlcv' END)
                        WHERE jsonb_typeof(value -> 'bars') = 'array'))
         || p
         || jsonb_build_object('ts', to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
  END IF;
  IF NOT ingest_well_formed(doc) OR (doc - ARRAY['symbol', 'ts', 'ohlcv', 'windows', 'features', 'orderbook',
                                                  'hidden_state', 'metadata']) <> '{}' THEN
    PERFORM ingest_check_structure(doc);
    PERFORM ingest_reject('package', 'malformed document (see docs/ingest.md for the format)');
  END IF;
  RETURN doc;
END
$fn$;

-- Is a required field present and non-empty? Paths are dotted: "ohlcv.1m", "features.rsi_14".
CREATE FUNCTION ingest_field_present(v jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT CASE jsonb_typeof(v)
    WHEN 'array' THEN jsonb_array_length(v) > 0
    WHEN 'object' THEN CASE WHEN v ? 'bars' THEN jsonb_array_length(v -> 'bars') > 0 ELSE v <> '{}' END
    WHEN 'null' THEN false
    ELSE v IS NOT NULL END
$fn$;

-- The verdict on a normalised, well-formed document: completeness over the required fields, the
-- named checks (true = passed) and, for a valid package only, its embedding (NULL otherwise).
--
-- Speed: each window's arrays are parsed once (jsonb_to_record's array input) and walked once by
-- subscript (O(1) on float8 arrays), computing cheap sufficient checks together with the
-- embedding's statistics: "contiguous" (every step equals the bar length, which implies
-- monotonic, and then the last bar is the newest) and "good" (a finite bar with a consistent OHLC
-- and a finite non-negative volume). Only when one of these fails does the exact per-check pass
-- (CTE slow) run, to tell which named checks failed.
--
-- The embedding is the 32-dim similarity summary (docs/ingest.md): 8 numbers for each of 1m,
-- 5m, 15m, 1h — the last four log returns and the window trend (log of last close over first
-- close, scaled by sqrt of the return count), in units of the window's return std and clipped
-- to +-5; log volatility ln(1 + 1e4 * std) / 5; where the last close sits in the window's
-- high-low range (-1..1); and the last bar's log-volume z-score (clipped to +-5). A missing
-- timeframe or an undefined number (e.g. a flat window) contributes zeros.
CREATE FUNCTION ingest_assess(p jsonb, p_ts timestamptz, p_rules jsonb,
                              OUT completeness double precision, OUT flags jsonb, OUT embedding vector)
LANGUAGE sql STABLE AS $fn$
  WITH w AS MATERIALIZED (  -- materialized: the timeframe's step is computed once, not per bar
    SELECT e.key AS tf, ingest_timeframe_s(e.key) AS step, x.t, x.bars AS m, coalesce(cardinality(x.t), 0) AS n
      FROM jsonb_each(p -> 'ohlcv') e, jsonb_to_record(e.value) AS x(t float8[], bars float8[])
  ), per_tf AS MATERIALIZED (
    -- Returns and log volumes are guarded so that no bar, however bad, raises (ln of 0 or < 0);
    -- a return is ln(c) - ln(c_prev), never ln(c / c_prev), whose quotient can overflow.
    SELECT w.tf, w.n, w.step, w.t, w.m, a.*
      FROM w, LATERAL (
        SELECT coalesce(bool_and(w.t[i] - w.t[i - 1] = w.step) FILTER (WHERE i > 1), true) AS contiguous,
               coalesce(bool_and(w.m[i][3] > 0 AND w.m[i][2] < 'Infinity' AND w.m[i][5] >= 0
                                 AND w.m[i][5] < 'Infinity' AND w.m[i][2] >= greatest(w.m[i][1], w.m[i][4])
                                 AND w.m[i][3] <= least(w.m[i][1], w.m[i][4])), true) AS good,
               nullif(stddev_pop(ln(w.m[i][4]) - ln(w.m[i - 1][4]))
                        FILTER (WHERE i > 1 AND w.m[i][4] > 0 AND w.m[i][4] < 'Infinity'
                                AND w.m[i - 1][4] > 0 AND w.m[i - 1][4] < 'Infinity'), 0) AS s,
               count(*) FILTER (WHERE i > 1 AND w.m[i][4] > 0 AND w.m[i][4] < 'Infinity'
                                AND w.m[i - 1][4] > 0 AND w.m[i - 1][4] < 'Infinity') AS nr,
               max(w.m[i][2]) AS hi, min(w.m[i][3]) AS lo,
               avg(ln(1 + w.m[i][5])) FILTER (WHERE w.m[i][5] >= 0 AND w.m[i][5] < 'Infinity') AS lv_mean,
               nullif(stddev_pop(ln(1 + w.m[i][5])) FILTER (WHERE w.m[i][5] >= 0 AND w.m[i][5] < 'Infinity'), 0)
                 AS lv_std
          FROM generate_series(1, w.n) i
      ) a
  ), slow AS (
    SELECT coalesce(bool_and(t > t_prev) FILTER (WHERE k > 1), true) AS monotonic,
           coalesce(bool_and(t + step <= extract(epoch FROM p_ts)), true) AS closed_by_ts,
           coalesce(bool_and(h >= greatest(o, c) AND l <= least(o, c) AND l > 0) FILTER (WHERE finite), true) AS ohlc,
           coalesce(bool_and(v >= 0) FILTER (WHERE finite), true) AS volume,
           coalesce(bool_and(finite), true) AS finite
      FROM (SELECT k, w.step, w.t[k] AS t, w.t[k - 1] AS t_prev, w.m[k][1] AS o, w.m[k][2] AS h, w.m[k][3] AS l,
                   w.m[k][4] AS c, w.m[k][5] AS v,
                   greatest(w.m[k][1], w.m[k][2], w.m[k][3], w.m[k][4], w.m[k][5]) < 'Infinity'
                   AND least(w.m[k][1], w.m[k][2], w.m[k][3], w.m[k][4], w.m[k][5]) > '-Infinity' AS finite
              FROM w, generate_series(1, w.n) k) bars
  ), fast AS (
    SELECT coalesce(bool_and(contiguous), true) AS contiguous, coalesce(bool_and(good), true) AS good,
           coalesce(bool_and(t[n] + step <= extract(epoch FROM p_ts)) FILTER (WHERE n > 0), true) AS last_closed
      FROM per_tf
  ), score AS (
    SELECT CASE WHEN count(*) = 0 THEN 1.0 ELSE
             (count(*) FILTER (WHERE ingest_field_present(p #> string_to_array(f, '.'))))::float8 / count(*) END AS value
      FROM jsonb_array_elements_text(p_rules -> 'required_fields') f
  ), verdict AS (
    SELECT score.value AS completeness, jsonb_build_object(
             'timestamp_sane', p_ts >= '2000-01-01T00:00:00Z' AND p_ts < 'infinity',
             'timestamp_not_future', p_ts <= now() + make_interval(secs => (p_rules ->> 'max_clock_skew_s')::float8),
             'windows_monotonic', fast.contiguous OR (SELECT monotonic FROM slow),
             'windows_contiguous', fast.contiguous,
             'windows_closed_by_ts', CASE WHEN fast.contiguous THEN fast.last_closed
                                          ELSE (SELECT closed_by_ts FROM slow) END,
             'windows_match_declared', (SELECT coalesce(jsonb_object_agg(tf, n), '{}') FROM w) = p -> 'windows',
             'ohlc_consistent', fast.good OR (SELECT ohlc FROM slow),
             'volume_non_negative', fast.good OR (SELECT volume FROM slow),
             'arrays_finite', (fast.good OR (SELECT finite FROM slow))
                              AND NOT jsonb_path_exists(p, 'strict $.features.*[*] ? (@.type() == "string")')
                              AND NOT jsonb_path_exists(jsonb_build_array(p -> 'orderbook', p -> 'hidden_state'),
                                                        'lax $.** ? (@.type() == "string")'),
             'complete_enough', score.value >= (p_rules ->> 'min_data_completeness')::float8) AS flags
      FROM fast, score
  )
  SELECT verdict.completeness, verdict.flags,
         CASE WHEN NOT jsonb_path_exists(verdict.flags, '$.* ? (@ == false)') THEN (
           SELECT array_agg(coalesce(greatest(-5, least(5, d.x)), 0) ORDER BY slots.slot, d.j)::vector
             FROM (VALUES ('1m', 0), ('5m', 1), ('15m', 2), ('1h', 3)) slots(tf, slot)
                  LEFT JOIN per_tf USING (tf),
                  unnest(ARRAY[(ln(m[n][4]) - ln(m[n - 1][4])) / s, (ln(m[n - 1][4]) - ln(m[n - 2][4])) / s,
                               (ln(m[n - 2][4]) - ln(m[n - 3][4])) / s, (ln(m[n - 3][4]) - ln(m[n - 4][4])) / s,
                               (ln(m[n][4]) - ln(m[1][4])) / (s * sqrt(nr)), ln(1 + 1e4 * coalesce(s, 0)) / 5,
                               (m[n][4] - lo) / nullif(hi - lo, 0) * 2 - 1, (ln(1 + m[n][5]) - lv_mean) / lv_std])
                    WITH ORDINALITY d(x, j))
         END
    FROM verdict
$fn$;

-- The canonical bytes of a document, refused when over the payload limit.
CREATE FUNCTION ingest_payload(p_doc jsonb, p_max_bytes bigint) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
  payload bytea := convert_to(p_doc::text, 'UTF8');
BEGIN
  IF octet_length(payload) > p_max_bytes THEN
    PERFORM ingest_reject('package', format('payload is %s bytes, over the limit of %s bytes',
                                            octet_length(payload), p_max_bytes));
  END IF;
  RETURN payload;
END
$fn$;

-- Store many packages at once (idempotent on data_hash); one row per input, by ord (1-based).
-- It uses the functions ingest_package uses (ingest_normalise, ingest_payload, ingest_assess),
-- so both paths share every rule. Set-based: one statement normalises, hashes, assesses and
-- inserts the whole batch, so a batch pays for its plans once, not once per package. A document
-- that repeats one stored before (or earlier in the batch) gets that row, with created = false.
-- Refuses the whole batch, naming the field, when any document is malformed.
CREATE FUNCTION ingest_packages(p_packages jsonb[], p_rules jsonb DEFAULT '{}')
RETURNS TABLE (ord bigint, package_id bigint, data_hash bytea, is_valid boolean,
               completeness_score double precision, validation_flags jsonb, created boolean)
LANGUAGE plpgsql
-- A custom plan looks cheaper for a small array (its exact length is known), so without this a
-- caller sending a few documents at a time would pay for planning the big statement every call.
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
DECLARE
  rules jsonb := ingest_default_rules() || coalesce(p_rules, '{}');
  hashes bytea[];
  stored bytea[];
BEGIN
  WITH docs AS MATERIALIZED (
    SELECT d.ord, n.doc, p.payload, sha256(p.payload) AS hash
      FROM unnest(p_packages) WITH ORDINALITY AS d(raw, ord)
           CROSS JOIN LATERAL ingest_normalise(d.raw) AS n(doc)
           CROSS JOIN LATERAL ingest_payload(n.doc, (rules ->> 'max_payload_bytes')::bigint) AS p(payload)
  ), fresh AS (  -- the first occurrence of each package not stored yet
    SELECT DISTINCT ON (d.hash) d.ord, d.doc, d.payload, d.hash, (d.doc ->> 'ts')::timestamptz AS ts
      FROM docs d
     WHERE NOT EXISTS (SELECT 1 FROM input_packages ip WHERE ip.data_hash = d.hash)
     ORDER BY d.hash, d.ord
  ), assessed AS (
    SELECT f.*, a.completeness, a.flags, a.embedding,
           NOT jsonb_path_exists(a.flags, '$.* ? (@ == false)') AS valid
      FROM fresh f CROSS JOIN LATERAL ingest_assess(f.doc, f.ts, rules) a
  ), inserted AS (
    INSERT INTO input_packages AS ip (symbol, ts, payload, payload_format, data_hash, completeness_score,
                                      validation_flags, is_valid, embedding, metadata)
    SELECT doc ->> 'symbol', ts, payload, 'mip-json-v1', hash, completeness, flags, valid,
           CASE WHEN valid THEN embedding END, doc -> 'metadata'
      FROM assessed ORDER BY ord
    ON CONFLICT (data_hash) DO NOTHING  -- a concurrent call stored it first: reported below
    RETURNING ip.data_hash
  )
  SELECT (SELECT array_agg(hash ORDER BY ord) FROM docs), (SELECT array_agg(data_hash) FROM inserted)
    INTO hashes, stored;
  -- A new statement, hence a new snapshot: it sees this call's rows and any a concurrent call
  -- committed while the INSERT above waited for it.
  RETURN QUERY
    SELECT h.ord, ip.id, ip.data_hash, ip.is_valid, ip.completeness_score, ip.validation_flags,
           s.hash IS NOT NULL AND h.ord = min(h.ord) OVER (PARTITION BY h.hash)
      FROM unnest(hashes) WITH ORDINALITY AS h(hash, ord)
           JOIN input_packages ip ON ip.data_hash = h.hash
           LEFT JOIN unnest(stored) AS s(hash) ON s.hash = h.hash
     ORDER BY h.ord;
END
$fn$;

-- Store one package (idempotent on its data_hash). Returns the row's id and verdict.
-- The one-document twin of ingest_packages: the same functions normalise, hash and assess, and
-- the stored row is the same; a few plain statements are cheaper for one document than the
-- batch's set-based plan (tests check that both paths store identical rows).
CREATE FUNCTION ingest_package(p_package jsonb, p_rules jsonb DEFAULT '{}')
RETURNS TABLE (package_id bigint, data_hash bytea, is_valid boolean, completeness_score double precision,
               validation_flags jsonb, created boolean)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
  rules jsonb := ingest_default_rules() || coalesce(p_rules, '{}');
  doc jsonb := ingest_normalise(p_package);
  v_payload bytea := ingest_payload(doc, (rules ->> 'max_payload_bytes')::bigint);
  v_hash bytea := sha256(v_payload);
  pkg_ts timestamptz := (doc ->> 'ts')::timestamptz;
  verdict record;
  valid boolean;
  new_id bigint;
BEGIN
  -- A retry of a stored package returns the stored row untouched.
  RETURN QUERY SELECT ip.id, ip.data_hash, ip.is_valid, ip.completeness_score, ip.validation_flags, false
                 FROM input_packages ip WHERE ip.data_hash = v_hash;
  IF FOUND THEN
    RETURN;
  END IF;
  SELECT * INTO verdict FROM ingest_assess(doc, pkg_ts, rules);
  valid := NOT jsonb_path_exists(verdict.flags, '$.* ? (@ == false)');
  INSERT INTO input_packages AS ip (symbol, ts, payload, payload_format, data_hash, completeness_score,
                                    validation_flags, is_valid, embedding, metadata)
  VALUES (doc ->> 'symbol', pkg_ts, v_payload, 'mip-json-v1', v_hash, verdict.completeness, verdict.flags, valid,
          CASE WHEN valid THEN verdict.embedding END, doc -> 'metadata')
  ON CONFLICT (data_hash) DO NOTHING
  RETURNING ip.id INTO new_id;
  IF new_id IS NULL THEN  -- a concurrent call stored the same package first
    RETURN QUERY SELECT ip.id, ip.data_hash, ip.is_valid, ip.completeness_score, ip.validation_flags, false
                   FROM input_packages ip WHERE ip.data_hash = v_hash;
  ELSE
    RETURN QUERY SELECT new_id, v_hash, valid, verdict.completeness, verdict.flags, true;
  END IF;
END
$fn$;

-- A finite JSON number (NULL when absent and p_optional).
CREATE FUNCTION ingest_number(p_field text, v jsonb, p_optional boolean DEFAULT false) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
  IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
    IF NOT p_optional THEN
      PERFORM ingest_reject(p_field, 'required: a number');
    END IF;
    RETURN NULL;
  END IF;
  IF jsonb_typeof(v) <> 'number' THEN
    PERFORM ingest_reject(p_field, format('must be a finite number, got %s', v));
  END IF;
  IF NOT pg_input_is_valid(v::text, 'float8') THEN
    PERFORM ingest_reject(p_field, format('%s is outside the float64 range', v));
  END IF;
  RETURN v::text::float8;
END
$fn$;

-- A non-empty JSON string.
CREATE FUNCTION ingest_text(p_field text, v jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
  IF jsonb_typeof(v) IS DISTINCT FROM 'string' OR btrim(v #>> '{}') = '' THEN
    PERFORM ingest_reject(p_field, format('required: a non-empty string, got %s', coalesce(v::text, 'nothing')));
  END IF;
  RETURN v #>> '{}';
END
$fn$;

-- Store one prediction (idempotent on prediction_key). The package is named by package_id or
-- package_hash (64 hex digits). The default key is derived from package, model, horizon, time.
CREATE FUNCTION ingest_prediction(p_prediction jsonb, p_rules jsonb DEFAULT '{}')
RETURNS TABLE (prediction_id bigint, created boolean)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
  rules jsonb := ingest_default_rules() || coalesce(p_rules, '{}');
  p jsonb := p_prediction;
  k text;
  pkg record;
  rec predictions%ROWTYPE;
  prev predictions%ROWTYPE;
BEGIN
  IF jsonb_typeof(p) IS DISTINCT FROM 'object' THEN
    PERFORM ingest_reject('prediction', 'must be a JSON object');
  END IF;
  SELECT key INTO k FROM jsonb_object_keys(p) key
   WHERE key NOT IN ('package_id', 'package_hash', 'model_kind', 'model_version', 'action', 'confidence',
                     'predicted_move', 'predicted_pivot', 'horizon_s', 'predicted_at', 'prediction_key')
   LIMIT 1;
  IF k IS NOT NULL THEN
    PERFORM ingest_reject(k, 'unknown field of a prediction');
  END IF;
  SELECT * INTO pkg FROM ingest_prediction_package(p);
  rec.package_id := pkg.id;
  rec.model_kind := ingest_text('model_kind', p -> 'model_kind');
  IF rec.model_kind NOT IN ('cnn', 'rl', 'other') THEN
    PERFORM ingest_reject('model_kind', format('unknown model kind %L (expected cnn, rl or other)', rec.model_kind));
  END IF;
  rec.model_version := ingest_text('model_version', p -> 'model_version');
  rec.action := ingest_text('action', p -> 'action');
  IF rec.action NOT IN ('long', 'short', 'hold') THEN
    PERFORM ingest_reject('action', format('unknown action %L (expected long, short or hold)', rec.action));
  END IF;
  rec.confidence := ingest_number('confidence', p -> 'confidence');
  IF NOT rec.confidence BETWEEN 0 AND 1 THEN
    PERFORM ingest_reject('confidence', format('must be between 0 and 1, got %s', rec.confidence));
  END IF;
  rec.predicted_move := ingest_number('predicted_move', p -> 'predicted_move', true);
  rec.predicted_pivot := ingest_number('predicted_pivot', p -> 'predicted_pivot', true);
  rec.horizon_s := ingest_horizon(p -> 'horizon_s');
  rec.predicted_at := CASE WHEN p ? 'predicted_at' THEN ingest_time('predicted_at', p -> 'predicted_at') ELSE pkg.ts END;
  IF rec.predicted_at < pkg.ts THEN
    PERFORM ingest_reject('predicted_at', format('%s is before its package''s ts %s', rec.predicted_at, pkg.ts));
  END IF;
  IF rec.predicted_at > now() + make_interval(secs => (rules ->> 'max_clock_skew_s')::float8) THEN
    PERFORM ingest_reject('predicted_at', format('%s is in the future', rec.predicted_at));
  END IF;
  rec.prediction_key := CASE WHEN p ? 'prediction_key' THEN ingest_text('prediction_key', p -> 'prediction_key')
    ELSE encode(sha256(convert_to(jsonb_build_array(encode(pkg.data_hash, 'hex'), rec.model_kind,
           rec.model_version, rec.horizon_s, extract(epoch FROM rec.predicted_at))::text, 'UTF8')), 'hex') END;

  INSERT INTO predictions AS pr (prediction_key, package_id, model_kind, model_version, action, confidence,
                                 predicted_move, predicted_pivot, horizon_s, predicted_at)
  VALUES (rec.prediction_key, rec.package_id, rec.model_kind, rec.model_version, rec.action, rec.confidence,
          rec.predicted_move, rec.predicted_pivot, rec.horizon_s, rec.predicted_at)
  ON CONFLICT (prediction_key) DO NOTHING
  RETURNING pr.id INTO rec.id;
  IF rec.id IS NOT NULL THEN
    RETURN QUERY SELECT rec.id, true;
    RETURN;
  END IF;
  -- A retry: the same key must carry the same prediction.
  SELECT * INTO prev FROM predictions pr WHERE pr.prediction_key = rec.prediction_key;
  IF (prev.package_id, prev.model_kind, prev.model_version, prev.action, prev.confidence, prev.predicted_move,
      prev.predicted_pivot, prev.horizon_s, prev.predicted_at)
     IS DISTINCT FROM (rec.package_id, rec.model_kind, rec.model_version, rec.action, rec.confidence,
      rec.predicted_move, rec.predicted_pivot, rec.horizon_s, rec.predicted_at) THEN
    PERFORM ingest_reject('prediction_key', format('%s was already recorded (prediction %s) with different values',
                                                   rec.prediction_key, prev.id));
  END IF;
  RETURN QUERY SELECT prev.id, false;
END
$fn$;

-- The package a prediction refers to, by package_id or package_hash.
CREATE FUNCTION ingest_prediction_package(p jsonb, OUT id bigint, OUT ts timestamptz, OUT data_hash bytea)
LANGUAGE plpgsql STABLE AS $fn$
#variable_conflict use_column
DECLARE
  hex text := p ->> 'package_hash';
BEGIN
  IF p ? 'package_id' THEN
    IF jsonb_typeof(p -> 'package_id') <> 'number' OR (p ->> 'package_id') !~ '^[0-9]{1,18}$' THEN
      PERFORM ingest_reject('package_id', format('must be an integer id, got %s', p -> 'package_id'));
    END IF;
    SELECT ip.id, ip.ts, ip.data_hash INTO id, ts, data_hash FROM input_packages ip
     WHERE ip.id = (p ->> 'package_id')::bigint;
    IF NOT FOUND THEN
      PERFORM ingest_reject('package_id', format('no input package with id %s', p ->> 'package_id'));
    END IF;
  ELSIF p ? 'package_hash' THEN
    IF jsonb_typeof(p -> 'package_hash') <> 'string' OR hex !~ '^[0-9a-fA-F]{64}$' THEN
      PERFORM ingest_reject('package_hash', 'must be the package''s SHA-256 as 64 hex digits');
    END IF;
    SELECT ip.id, ip.ts, ip.data_hash INTO id, ts, data_hash FROM input_packages ip
     WHERE ip.data_hash = decode(hex, 'hex');
    IF NOT FOUND THEN
      PERFORM ingest_reject('package_hash', format('no input package with hash %s', hex));
    END IF;
  ELSE
    PERFORM ingest_reject('package_id', 'required: package_id or package_hash');
  END IF;
END
$fn$;

CREATE FUNCTION ingest_horizon(v jsonb) RETURNS integer
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
  IF jsonb_typeof(v) IS DISTINCT FROM 'number' OR v::text !~ '^-?[0-9]+$' THEN
    PERFORM ingest_reject('horizon_s', format('must be a whole number of seconds, got %s', coalesce(v::text, 'nothing')));
  END IF;
  IF v::text::numeric <= 0 OR v::text::numeric > 2147483647 THEN
    PERFORM ingest_reject('horizon_s', format('must be a positive number of seconds, got %s', v));
  END IF;
  RETURN v::text::integer;
END
$fn$;

-- Store a package and the prediction made from it, atomically (one statement).
CREATE FUNCTION ingest_record(p_package jsonb, p_prediction jsonb, p_rules jsonb DEFAULT '{}')
RETURNS TABLE (package_id bigint, prediction_id bigint, is_valid boolean, validation_flags jsonb,
               package_created boolean, prediction_created boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
  pkg record;
  pred record;
BEGIN
  IF jsonb_typeof(p_prediction) = 'object' AND (p_prediction ?| ARRAY['package_id', 'package_hash']) THEN
    PERFORM ingest_reject('package_id', 'is set by ingest_record from the package being recorded');
  END IF;
  SELECT * INTO pkg FROM ingest_package(p_package, p_rules);
  SELECT * INTO pred FROM ingest_prediction(
    CASE WHEN jsonb_typeof(p_prediction) = 'object'
         THEN p_prediction || jsonb_build_object('package_id', pkg.package_id) ELSE p_prediction END, p_rules);
  RETURN QUERY SELECT pkg.package_id, pred.prediction_id, pkg.is_valid, pkg.validation_flags,
                      pkg.created, pred.created;
END
$fn$;
