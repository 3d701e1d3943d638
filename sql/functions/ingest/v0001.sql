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
  IF jsonb_typeof(p -> 'symbol') IS DISTINCT FROM 'string' OR btrim(p ->> 'symbol') = '' THEN
    PERFORM ingest_reject('symbol', 'required: a non-empty string');
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

-- One jsonpath pass over a defaults-filled document: true when every part has the right type
-- and shape. NULL or false sends the document to ingest_check_structure, which names the field.
-- Numbers outside the float64 range pass here; parsing them in ingest_assess fails, and that
-- failure is routed to ingest_check_structure too (see ingest_package).
CREATE FUNCTION ingest_well_formed(p jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT coalesce(jsonb_path_match(p, 'strict
      $.ohlcv.type() == "object" && $.features.type() == "object" && $.windows.type() == "object"
      && $.metadata.type() == "object" && $.symbol.type() == "string"
      && ($.orderbook.type() == "null" || $.orderbook.type() == "array")
      && ($.hidden_state.type() == "null" || $.hidden_state.type() == "array")
      && !exists($.ohlcv.keyvalue() ? (!(@.key like_regex "^0*[1-9][0-9]*[smhdw]$")))
      && !exists($.ohlcv.*.keyvalue() ? (@.key != "t" && @.key != "bars"))
      && !exists($.ohlcv.* ? (@.t.size() != @.bars.size()))
      && !exists($.ohlcv.*.t[*] ? (@.type() != "number" || @ > 1e15 || @ < -1e15))
      && !exists($.ohlcv.*.bars[*] ? (@.size() != 5))
      && !exists($.ohlcv.*.bars[*][*] ? (@.type() != "number"
           && (@.type() != "string" || (@ != "NaN" && @ != "Infinity" && @ != "-Infinity"))))
      && !exists($.windows.* ? (@.type() != "number" || @ < 1 || @ > 1000000 || @.floor() != @))
      && !exists($.features.*[*] ? (@.type() != "number"
           && (@.type() != "string" || (@ != "NaN" && @ != "Infinity" && @ != "-Infinity"))))',
    silent => true), false)
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
  IF jsonb_typeof(doc -> 'orderbook') = 'array' OR jsonb_typeof(doc -> 'hidden_state') = 'array' THEN
    PERFORM ingest_check_structure(doc);
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

-- The verdict on a normalised, well-formed document, in one pass over its parsed windows:
-- completeness over the required fields, the named checks (true = passed) and, for a valid
-- package, its embedding.
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
  WITH w AS MATERIALIZED (  -- each window parsed once, by jsonb_to_record's array input
    SELECT e.key AS tf, ingest_timeframe_s(e.key) AS step, x.t, x.bars AS m, cardinality(x.t) AS n
      FROM jsonb_each(p -> 'ohlcv') e, jsonb_to_record(e.value) AS x(t float8[], bars float8[])
  ), bars AS (
    -- unnest of column slices: O(n); subscripting the arrays row by row would re-read them each time
    SELECT w.tf, w.step, w.n - u.i + 1 AS back, u.t, u.o, u.h, u.l, u.c, u.v,
           u.t - lag(u.t) OVER win AS dt, lag(u.c) OVER win AS c_prev, first_value(u.c) OVER win AS c_first,
           greatest(u.o, u.h, u.l, u.c, u.v) < 'Infinity' AND least(u.o, u.h, u.l, u.c, u.v) > '-Infinity' AS finite
      FROM w, unnest(w.t, w.m[:][1:1], w.m[:][2:2], w.m[:][3:3], w.m[:][4:4], w.m[:][5:5])
              WITH ORDINALITY u(t, o, h, l, c, v, i)
    WINDOW win AS (PARTITION BY w.tf ORDER BY u.i)
  ), rets AS (
    SELECT *, CASE WHEN finite AND c > 0 AND c_prev > 0 THEN ln(c / c_prev) END AS r,
           CASE WHEN finite AND v >= 0 THEN ln(1 + v) END AS lv
      FROM bars
  ), per_tf AS (
    SELECT tf,
           coalesce(bool_and(dt > 0), true) AS monotonic,
           coalesce(bool_and(dt = step), true) AS contiguous,
           coalesce(bool_and(t + step <= extract(epoch FROM p_ts)), true) AS closed_by_ts,
           coalesce(bool_and(h >= greatest(o, c) AND l <= least(o, c) AND l > 0) FILTER (WHERE finite), true) AS ohlc,
           coalesce(bool_and(v >= 0) FILTER (WHERE finite), true) AS volume,
           coalesce(bool_and(finite), true) AS finite,
           nullif(stddev_pop(r), 0) AS s, count(r) AS nr, max(h) AS hi, min(l) AS lo,
           avg(lv) AS lv_mean, nullif(stddev_pop(lv), 0) AS lv_std,
           max(r) FILTER (WHERE back = 1) AS r1, max(r) FILTER (WHERE back = 2) AS r2,
           max(r) FILTER (WHERE back = 3) AS r3, max(r) FILTER (WHERE back = 4) AS r4,
           max(ln(c / c_first)) FILTER (WHERE back = 1 AND c > 0 AND c_first > 0) AS trend,
           max(c) FILTER (WHERE back = 1) AS c_last, max(lv) FILTER (WHERE back = 1) AS lv_last
      FROM rets GROUP BY tf
  ), checks AS (
    SELECT coalesce(bool_and(monotonic), true) AS monotonic, coalesce(bool_and(contiguous), true) AS contiguous,
           coalesce(bool_and(closed_by_ts), true) AS closed_by_ts, coalesce(bool_and(ohlc), true) AS ohlc,
           coalesce(bool_and(volume), true) AS volume, coalesce(bool_and(finite), true) AS finite
      FROM per_tf
  ), score AS (
    SELECT CASE WHEN count(*) = 0 THEN 1.0 ELSE
             (count(*) FILTER (WHERE ingest_field_present(p #> string_to_array(f, '.'))))::float8 / count(*) END AS value
      FROM jsonb_array_elements_text(p_rules -> 'required_fields') f
  ), slots(tf, slot) AS (VALUES ('1m', 0), ('5m', 1), ('15m', 2), ('1h', 3)
  ), dims AS (
    SELECT slots.slot, d.j, d.x
      FROM slots LEFT JOIN per_tf USING (tf),
           unnest(ARRAY[r1 / s, r2 / s, r3 / s, r4 / s, trend / (s * sqrt(nr)), ln(1 + 1e4 * coalesce(s, 0)) / 5,
                        2 * (c_last - lo) / nullif(hi - lo, 0) - 1, (lv_last - lv_mean) / lv_std])
             WITH ORDINALITY d(x, j)
  )
  SELECT score.value,
         jsonb_build_object(
           'timestamp_sane', p_ts >= '2000-01-01T00:00:00Z' AND p_ts < 'infinity',
           'timestamp_not_future', p_ts <= now() + make_interval(secs => (p_rules ->> 'max_clock_skew_s')::float8),
           'windows_monotonic', checks.monotonic,
           'windows_contiguous', checks.contiguous,
           'windows_closed_by_ts', checks.closed_by_ts,
           'windows_match_declared', (SELECT coalesce(jsonb_object_agg(tf, n), '{}') FROM w) = p -> 'windows',
           'ohlc_consistent', checks.ohlc,
           'volume_non_negative', checks.volume,
           'arrays_finite', checks.finite AND NOT jsonb_path_exists(
               jsonb_build_array(p -> 'features', p -> 'orderbook', p -> 'hidden_state'),
               'lax $.** ? (@.type() == "string")'),
           'complete_enough', score.value >= (p_rules ->> 'min_data_completeness')::float8),
         (SELECT array_agg(coalesce(greatest(-5, least(5, x)), 0) ORDER BY slot, j)::vector FROM dims)
    FROM checks, score
$fn$;

-- Store one package (idempotent on its data_hash). Returns the row's id and verdict.
CREATE FUNCTION ingest_package(p_package jsonb, p_rules jsonb DEFAULT '{}')
RETURNS TABLE (package_id bigint, data_hash bytea, is_valid boolean, completeness_score double precision,
               validation_flags jsonb, created boolean)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
  rules jsonb := ingest_default_rules() || coalesce(p_rules, '{}');
  doc jsonb := ingest_normalise(p_package);
  v_payload bytea := convert_to(doc::text, 'UTF8');
  v_hash bytea := sha256(v_payload);
  pkg_ts timestamptz;
  score float8;
  flags jsonb;
  emb vector;
  valid boolean;
  new_id bigint;
BEGIN
  IF octet_length(v_payload) > (rules ->> 'max_payload_bytes')::bigint THEN
    PERFORM ingest_reject('package', format('payload is %s bytes, over the limit of %s bytes',
                                            octet_length(v_payload), rules ->> 'max_payload_bytes'));
  END IF;
  -- A retry of a stored package returns the stored row untouched.
  RETURN QUERY SELECT ip.id, ip.data_hash, ip.is_valid, ip.completeness_score, ip.validation_flags, false
                 FROM input_packages ip WHERE ip.data_hash = v_hash;
  IF FOUND THEN
    RETURN;
  END IF;
  pkg_ts := (doc ->> 'ts')::timestamptz;
  BEGIN
    SELECT a.completeness, a.flags, a.embedding INTO score, flags, emb FROM ingest_assess(doc, pkg_ts, rules) a;
  EXCEPTION WHEN numeric_value_out_of_range OR invalid_text_representation THEN
    PERFORM ingest_check_structure(doc);  -- names the field that failed to parse
    RAISE;
  END;
  valid := NOT jsonb_path_exists(flags, '$.* ? (@ == false)');
  INSERT INTO input_packages AS ip (symbol, ts, payload, payload_format, data_hash, completeness_score,
                                    validation_flags, is_valid, embedding, metadata)
  VALUES (doc ->> 'symbol', pkg_ts, v_payload, 'mip-json-v1', v_hash, score, flags, valid,
          CASE WHEN valid THEN emb END, doc -> 'metadata')
  ON CONFLICT (data_hash) DO NOTHING
  RETURNING ip.id INTO new_id;
  IF new_id IS NULL THEN  -- a concurrent call stored the same package first
    RETURN QUERY SELECT ip.id, ip.data_hash, ip.is_valid, ip.completeness_score, ip.validation_flags, false
                   FROM input_packages ip WHERE ip.data_hash = v_hash;
  ELSE
    RETURN QUERY SELECT new_id, v_hash, valid, score, flags, true;
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
