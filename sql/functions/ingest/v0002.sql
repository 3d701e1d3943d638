-- Ingest functions, version 2 (migration 0011): hardening after an outside attack (issue 18).
-- Only the functions that change are redefined here (CREATE OR REPLACE: grants stay); the rest of
-- version 1 stays as it was.
--
-- * Rules come from the server's configuration (table ingest_config), never from the caller: only
--   a trainer or the database owner may pass p_rules (tests, maintenance); anybody else gets
--   SQLSTATE 42501. Configured rules are checked, and a bad rule is a clear 22023 error naming it.
-- * A missing (or NULL) validation flag is a failed flag: it is stored as false.
-- * Times are strict ISO 8601: a four-digit year, then month, day, time and a UTC offset.
-- * Bounded input: metadata nesting and size, integral windows, timeframes of at most 366 days,
--   model_version and prediction_key lengths.
-- * A prediction timed before its package's ts no longer reveals that package's ts.

-- Is the calling role (not the owner these SECURITY DEFINER functions run as) a trainer or the owner?
-- session_user is the login; a SET ROLE inside the session narrows it to that role.
CREATE OR REPLACE FUNCTION ingest_caller_is_privileged() RETURNS boolean
LANGUAGE sql STABLE AS $fn$
  SELECT pg_has_role(caller, 'trainsrv_trainer', 'MEMBER')
         OR pg_has_role(caller, (SELECT datdba FROM pg_database WHERE datname = current_database()), 'MEMBER')
    FROM (SELECT CASE current_setting('role') WHEN 'none' THEN session_user
                 ELSE current_setting('role')::name END AS caller) c
$fn$;

-- The rules checked one by one; a bad rule raises 22023 naming it ("rules.<name>: ...").
CREATE OR REPLACE FUNCTION ingest_checked_rules(p_rules jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $fn$
DECLARE
  k text;
BEGIN
  IF jsonb_typeof(p_rules) IS DISTINCT FROM 'object' THEN
    PERFORM ingest_reject('rules', format('must be a JSON object, got %s', coalesce(p_rules::text, 'nothing')));
  END IF;
  SELECT key INTO k FROM jsonb_object_keys(p_rules) key
   WHERE key NOT IN ('min_data_completeness', 'max_clock_skew_s', 'max_payload_bytes', 'required_fields') LIMIT 1;
  IF k IS NOT NULL THEN
    PERFORM ingest_reject('rules.' || left(k, 64), 'unknown rule (expected min_data_completeness, '
                          'max_clock_skew_s, max_payload_bytes, required_fields)');
  END IF;
  -- CASE, not OR: SQL does not promise to test the type before the cast (parenthesised for plpgsql's IF).
  IF (CASE WHEN jsonb_typeof(p_rules -> 'min_data_completeness') = 'number'
          THEN NOT (p_rules ->> 'min_data_completeness')::numeric BETWEEN 0 AND 1 ELSE true END) THEN
    PERFORM ingest_reject('rules.min_data_completeness', format('must be a number in [0, 1], got %s',
                          coalesce(p_rules -> 'min_data_completeness', 'null')));
  END IF;
  IF (CASE WHEN jsonb_typeof(p_rules -> 'max_clock_skew_s') = 'number'
          THEN NOT (p_rules ->> 'max_clock_skew_s')::numeric BETWEEN 0 AND 3600 ELSE true END) THEN
    PERFORM ingest_reject('rules.max_clock_skew_s', format('must be a number of seconds in [0, 3600], got %s',
                          coalesce(p_rules -> 'max_clock_skew_s', 'null')));
  END IF;
  IF (CASE WHEN jsonb_typeof(p_rules -> 'max_payload_bytes') = 'number' AND (p_rules ->> 'max_payload_bytes') ~ '^[0-9]{1,10}$'
          THEN NOT (p_rules ->> 'max_payload_bytes')::bigint BETWEEN 1024 AND 268435456 ELSE true END) THEN
    PERFORM ingest_reject('rules.max_payload_bytes', format('must be a whole number of bytes in [1024, 268435456], '
                          'got %s', coalesce(p_rules -> 'max_payload_bytes', 'null')));
  END IF;
  IF (CASE WHEN jsonb_typeof(p_rules -> 'required_fields') = 'array'
               AND NOT jsonb_path_exists(p_rules -> 'required_fields', 'strict $[*] ? (@.type() != "string")')
          THEN jsonb_array_length(p_rules -> 'required_fields') > 100
               OR EXISTS (SELECT 1 FROM jsonb_array_elements_text(p_rules -> 'required_fields') f
                           WHERE f !~ '^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$' OR length(f) > 200)
          ELSE true END) THEN
    PERFORM ingest_reject('rules.required_fields', 'must be an array of at most 100 dotted field paths '
                          '(e.g. "ohlcv.1m", "features.rsi_14")');
  END IF;
  RETURN p_rules;
END
$fn$;

-- The rules a call runs with: the server's configuration (ingest_config), over the built-in
-- defaults; p_rules on top only for a privileged caller.
CREATE OR REPLACE FUNCTION ingest_rules(p_rules jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
  rules jsonb := ingest_default_rules() || coalesce((SELECT c.rules FROM ingest_config c WHERE c.id = 1), '{}');
BEGIN
  IF p_rules IS NOT NULL AND p_rules <> '{}' THEN
    IF NOT ingest_caller_is_privileged() THEN
      RAISE EXCEPTION USING ERRCODE = '42501', COLUMN = 'rules',
        MESSAGE = 'rules: validation rules come from the server''s configuration (ingest_config); pass ''{}''';
    END IF;
    IF jsonb_typeof(p_rules) <> 'object' THEN
      PERFORM ingest_reject('rules', format('must be a JSON object, got %s', p_rules));
    END IF;
    rules := rules || p_rules;
  END IF;
  RETURN ingest_checked_rules(rules);
END
$fn$;

-- Every named check of a package, with a missing or NULL one counted (and stored) as failed.
CREATE OR REPLACE FUNCTION ingest_complete_flags(p_flags jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT jsonb_object_agg(name, coalesce(jsonb_typeof(p_flags -> name) = 'boolean' AND (p_flags ->> name)::boolean,
                                         false))
    FROM unnest(ARRAY['timestamp_sane', 'timestamp_not_future', 'windows_monotonic', 'windows_contiguous',
                      'windows_closed_by_ts', 'windows_match_declared', 'ohlc_consistent', 'volume_non_negative',
                      'arrays_finite', 'complete_enough']) name
$fn$;

-- Seconds in one bar of a timeframe label such as 1m, 15m, 1h (NULL when malformed or longer than
-- 366 days).
CREATE OR REPLACE FUNCTION ingest_timeframe_s(p_timeframe text) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
  SELECT CASE WHEN s BETWEEN 1 AND 31622400 THEN s::integer END
    FROM (SELECT substring(p_timeframe FROM '^0*([0-9]{1,9})[smhdw]$')::bigint
                 * CASE right(p_timeframe, 1) WHEN 's' THEN 1 WHEN 'm' THEN 60 WHEN 'h' THEN 3600
                                              WHEN 'd' THEN 86400 WHEN 'w' THEN 604800 END AS s) x
$fn$;

-- A strict ISO 8601 time with its UTC offset: YYYY-MM-DDTHH:MM[:SS[.fff]] then Z or +HH[:MM].
CREATE OR REPLACE FUNCTION ingest_time(p_field text, p_value jsonb) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
  s text := p_value #>> '{}';
BEGIN
  IF p_value IS NULL OR jsonb_typeof(p_value) <> 'string'
     OR s !~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|z|[+-][0-9]{2}(:?[0-9]{2})?)$'
     OR NOT pg_input_is_valid(s, 'timestamptz') THEN
    PERFORM ingest_reject(p_field, format('must be an ISO 8601 time with a four-digit year and a UTC offset '
                                          '(e.g. 2022-01-05T12:00:00Z), got %s',
                                          left(coalesce(p_value::text, 'nothing'), 80)));
  END IF;
  RETURN s::timestamptz;
END
$fn$;

-- Problem with a package's metadata (nesting deeper than 32 levels, over 64 KiB as text), or NULL.
CREATE OR REPLACE FUNCTION ingest_metadata_problem(p_metadata jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT CASE
    WHEN p_metadata IS NULL OR jsonb_typeof(p_metadata) <> 'object' THEN NULL
    WHEN jsonb_path_exists(p_metadata, 'strict $.**{32 to last}') THEN 'must not nest deeper than 32 levels'
    WHEN octet_length(p_metadata::text) > 65536 THEN 'must be at most 65536 bytes as JSON'
  END
$fn$;

-- Refuse a document whose structure is wrong (unknown keys, wrong types, ragged arrays, ...).
CREATE OR REPLACE FUNCTION ingest_check_structure(p jsonb) RETURNS void
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
    PERFORM ingest_reject(left(k, 64), 'unknown field (expected symbol, ts, ohlcv, windows, features, orderbook, '
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
  problem := ingest_metadata_problem(p -> 'metadata');
  IF problem IS NOT NULL THEN
    PERFORM ingest_reject('metadata', problem);
  END IF;
  FOR k, v IN SELECT key, value FROM jsonb_each(coalesce(p -> 'ohlcv', '{}')) LOOP
    PERFORM ingest_check_window(left(k, 64), v);
  END LOOP;
  FOR k, v IN SELECT key, value FROM jsonb_each(coalesce(p -> 'windows', '{}')) LOOP
    IF jsonb_typeof(v) <> 'number' OR v::text !~ '^[0-9]{1,7}$' OR v::text::numeric NOT BETWEEN 1 AND 1000000 THEN
      PERFORM ingest_reject('windows.' || left(k, 64), format('must be a positive integer, got %s', left(v::text, 80)));
    END IF;
  END LOOP;
  FOR k, v IN SELECT key, value FROM jsonb_each(coalesce(p -> 'features', '{}')) LOOP
    problem := ingest_flat_problem(v);
    IF problem IS NOT NULL THEN
      PERFORM ingest_reject('features.' || left(k, 64), problem);
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

-- True when every part of a defaults-filled document has the right type and shape (version 1's
-- check), its windows are written as integers (60, not 60.0), every timeframe is in range and its
-- metadata is within bounds. NULL or false sends the document to ingest_check_structure, which
-- names the field.
CREATE OR REPLACE FUNCTION ingest_well_formed_v2(p jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $fn$
  SELECT CASE WHEN coalesce(ingest_well_formed(p), false)  -- then windows, ohlcv and metadata are objects
    THEN NOT EXISTS (SELECT 1 FROM jsonb_each(p -> 'windows') e WHERE e.value::text !~ '^[0-9]{1,7}$')
         AND NOT EXISTS (SELECT 1 FROM jsonb_object_keys(p -> 'ohlcv') k WHERE ingest_timeframe_s(k) IS NULL)
         AND ingest_metadata_problem(p -> 'metadata') IS NULL
    ELSE false END
$fn$;

-- The document in canonical shape (as version 1), checked with ingest_well_formed_v2.
CREATE OR REPLACE FUNCTION ingest_normalise(p jsonb) RETURNS jsonb
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
  IF NOT coalesce(ingest_well_formed_v2(doc), false)
     OR (doc - ARRAY['symbol', 'ts', 'ohlcv', 'windows', 'features', 'orderbook', 'hidden_state', 'metadata']) <> '{}'
  THEN
    PERFORM ingest_check_structure(doc);
    PERFORM ingest_reject('package', 'malformed document (see docs/ingest.md for the format)');
  END IF;
  RETURN doc;
END
$fn$;

-- Store many packages at once (idempotent on data_hash); one row per input, by ord (1-based).
-- As version 1, with the server's rules and every flag present.
CREATE OR REPLACE FUNCTION ingest_packages(p_packages jsonb[], p_rules jsonb DEFAULT '{}')
RETURNS TABLE (ord bigint, package_id bigint, data_hash bytea, is_valid boolean,
               completeness_score double precision, validation_flags jsonb, created boolean)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp
-- A custom plan looks cheaper for a small array (its exact length is known), so without this a
-- caller sending a few documents at a time would pay for planning the big statement every call.
SET plan_cache_mode = force_generic_plan
AS $fn$
#variable_conflict use_column
DECLARE
  rules jsonb := ingest_rules(p_rules);
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
    SELECT f.*, a.completeness, fl.flags, a.embedding,
           NOT jsonb_path_exists(fl.flags, '$.* ? (@ == false)') AS valid
      FROM fresh f CROSS JOIN LATERAL ingest_assess(f.doc, f.ts, rules) a
           CROSS JOIN LATERAL ingest_complete_flags(a.flags) AS fl(flags)
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

-- Store one package (idempotent on its data_hash), as version 1, with the server's rules and every
-- flag present.
CREATE OR REPLACE FUNCTION ingest_package(p_package jsonb, p_rules jsonb DEFAULT '{}')
RETURNS TABLE (package_id bigint, data_hash bytea, is_valid boolean, completeness_score double precision,
               validation_flags jsonb, created boolean)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  rules jsonb := ingest_rules(p_rules);
  doc jsonb := ingest_normalise(p_package);
  v_payload bytea := ingest_payload(doc, (rules ->> 'max_payload_bytes')::bigint);
  v_hash bytea := sha256(v_payload);
  pkg_ts timestamptz := (doc ->> 'ts')::timestamptz;
  verdict record;
  v_flags jsonb;
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
  v_flags := ingest_complete_flags(verdict.flags);
  valid := NOT jsonb_path_exists(v_flags, '$.* ? (@ == false)');
  INSERT INTO input_packages AS ip (symbol, ts, payload, payload_format, data_hash, completeness_score,
                                    validation_flags, is_valid, embedding, metadata)
  VALUES (doc ->> 'symbol', pkg_ts, v_payload, 'mip-json-v1', v_hash, verdict.completeness, v_flags, valid,
          CASE WHEN valid THEN verdict.embedding END, doc -> 'metadata')
  ON CONFLICT (data_hash) DO NOTHING
  RETURNING ip.id INTO new_id;
  IF new_id IS NULL THEN  -- a concurrent call stored the same package first
    RETURN QUERY SELECT ip.id, ip.data_hash, ip.is_valid, ip.completeness_score, ip.validation_flags, false
                   FROM input_packages ip WHERE ip.data_hash = v_hash;
  ELSE
    RETURN QUERY SELECT new_id, v_hash, valid, verdict.completeness, v_flags, true;
  END IF;
END
$fn$;

-- A non-empty JSON string of at most p_max_chars characters.
CREATE OR REPLACE FUNCTION ingest_short_text(p_field text, v jsonb, p_max_chars integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
  PERFORM ingest_text(p_field, v);
  IF length(v #>> '{}') > p_max_chars THEN
    PERFORM ingest_reject(p_field, format('must be at most %s characters, got %s', p_max_chars,
                                          length(v #>> '{}')));
  END IF;
  RETURN v #>> '{}';
END
$fn$;

-- Store one prediction (idempotent on prediction_key), as version 1 with the server's rules,
-- bounded model_version (200) and prediction_key (200), and an error for a prediction timed before
-- its package that does not show the package's ts.
CREATE OR REPLACE FUNCTION ingest_prediction(p_prediction jsonb, p_rules jsonb DEFAULT '{}')
RETURNS TABLE (prediction_id bigint, created boolean)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp
AS $fn$
#variable_conflict use_column
DECLARE
  rules jsonb := ingest_rules(p_rules);
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
    PERFORM ingest_reject(left(k, 64), 'unknown field of a prediction');
  END IF;
  SELECT * INTO pkg FROM ingest_prediction_package(p);
  rec.package_id := pkg.id;
  rec.model_kind := ingest_text('model_kind', p -> 'model_kind');
  IF rec.model_kind NOT IN ('cnn', 'rl', 'other') THEN
    PERFORM ingest_reject('model_kind', format('unknown model kind %L (expected cnn, rl or other)',
                                               left(rec.model_kind, 64)));
  END IF;
  rec.model_version := ingest_short_text('model_version', p -> 'model_version', 200);
  rec.action := ingest_text('action', p -> 'action');
  IF rec.action NOT IN ('long', 'short', 'hold') THEN
    PERFORM ingest_reject('action', format('unknown action %L (expected long, short or hold)', left(rec.action, 64)));
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
    PERFORM ingest_reject('predicted_at', 'is before its package''s ts');
  END IF;
  IF rec.predicted_at > now() + make_interval(secs => (rules ->> 'max_clock_skew_s')::float8) THEN
    PERFORM ingest_reject('predicted_at', format('%s is in the future', rec.predicted_at));
  END IF;
  rec.prediction_key := CASE WHEN p ? 'prediction_key'
    THEN ingest_short_text('prediction_key', p -> 'prediction_key', 200)
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

-- Store a package and the prediction made from it, atomically (one statement), with the server's
-- rules (version 1 passed p_rules through; the callees now check who may).
CREATE OR REPLACE FUNCTION ingest_record(p_package jsonb, p_prediction jsonb, p_rules jsonb DEFAULT '{}')
RETURNS TABLE (package_id bigint, prediction_id bigint, is_valid boolean, validation_flags jsonb,
               package_created boolean, prediction_created boolean)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public, pg_temp
AS $fn$
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
