-- RL experiences (app/experiences): transitions from consecutive predictions of one model on a symbol.

-- name: build
-- Build or refresh transitions for validated predictions of :model_kind; new rows enter at the replay's running max priority.
WITH seq AS (
    -- A model's trajectory on a symbol: its predictions in time order (one model version = one policy).
    SELECT p.id, p.package_id, p.action, p.predicted_at, pk.symbol,
           lead(p.package_id) OVER w AS next_package_id,
           lead(p.predicted_at) OVER w AS next_at
    FROM predictions p
    JOIN input_packages pk ON pk.id = p.package_id
    WHERE p.model_kind = :model_kind AND (CAST(:symbol AS text) IS NULL OR pk.symbol = :symbol)
    WINDOW w AS (PARTITION BY pk.symbol, p.model_version ORDER BY p.predicted_at, p.id)
),
transitions AS (
    SELECT s.id, s.symbol, s.package_id, s.action, o.actual_profit AS reward, o.optimal_action, o.is_profitable,
           s.next_at - s.predicted_at <= make_interval(secs => :max_gap_s) AS continues, s.next_package_id
    FROM seq s
    JOIN outcomes o ON o.prediction_id = s.id AND o.status = 'validated'
    -- The last prediction so far waits: its next state may still arrive, until the gap has passed.
    WHERE s.next_at IS NOT NULL OR s.predicted_at + make_interval(secs => :max_gap_s) < :as_of
),
written AS (
    -- priority NULL: the replay's BEFORE INSERT trigger sets the running maximum (rl_replay_config).
    INSERT INTO experiences AS x (symbol, prediction_id, state_package_id, next_state_package_id, action, reward,
                                  done, optimal_action, is_profitable, priority)
    SELECT symbol, id, package_id, CASE WHEN continues THEN next_package_id END, action, reward,
           NOT coalesce(continues, false), optimal_action, is_profitable, NULL
    FROM transitions
    ON CONFLICT (prediction_id) DO UPDATE SET
        next_state_package_id = EXCLUDED.next_state_package_id, reward = EXCLUDED.reward, done = EXCLUDED.done,
        optimal_action = EXCLUDED.optimal_action, is_profitable = EXCLUDED.is_profitable
    WHERE (x.next_state_package_id, x.reward, x.done, x.optimal_action, x.is_profitable)
          IS DISTINCT FROM (EXCLUDED.next_state_package_id, EXCLUDED.reward, EXCLUDED.done,
                            EXCLUDED.optimal_action, EXCLUDED.is_profitable)
    RETURNING (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted, count(*) FILTER (WHERE NOT inserted) AS updated
FROM written;

-- name: lock_building
-- Serialise experience builds (a concurrent build would race on the same predictions); held to commit.
SELECT pg_advisory_xact_lock(hashtext('trainsrv.experiences.build'));
