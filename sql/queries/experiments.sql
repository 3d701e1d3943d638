-- Walk-forward experiments (app/experiments). Definitions: docs/evidence.md.

-- name: insert
-- A new experiment, running.
INSERT INTO experiments (kind, series, symbol, config, status)
VALUES ('walk_forward', :series, :symbol, CAST(:config AS jsonb), 'running')
RETURNING id;

-- name: finish
-- The experiment succeeded with its summary.
UPDATE experiments SET status = 'succeeded', summary = CAST(:summary AS jsonb), ended_at = now() WHERE id = :id;

-- name: fail
-- The experiment failed (its results so far stay).
UPDATE experiments SET status = 'failed', error = :error, ended_at = now() WHERE id = :id;

-- name: insert_result
-- One source's metrics on one window of one lane.
INSERT INTO experiment_results (experiment_id, family, arm, seed, round, source, window_from, window_to, session_id,
                                episodes, calls, total_profit, profit_per_call, hit_rate, accuracy, baseline_accuracy,
                                hold_share, train_episodes, promoted, leakage_rows)
VALUES (:experiment_id, :family, :arm, :seed, :round, :source, :window_from, :window_to, :session_id,
        :episodes, :calls, :total_profit, :profit_per_call, :hit_rate, :accuracy, :baseline_accuracy,
        :hold_share, :train_episodes, :promoted, :leakage_rows);

-- name: results
-- Every result row of an experiment.
SELECT family, arm, seed, round, source, window_from, window_to, session_id, episodes, calls, total_profit,
       profit_per_call, hit_rate, accuracy, baseline_accuracy, hold_share, train_episodes, promoted, leakage_rows
FROM experiment_results WHERE experiment_id = :id ORDER BY family, arm, seed, round, source;

-- name: get
-- One experiment.
SELECT id, kind, series, symbol, config, status, summary, error, started_at, ended_at FROM experiments WHERE id = :id;

-- name: list
-- Experiments, newest first.
SELECT id, series, symbol, status, started_at, ended_at, ended_at - started_at AS took
FROM experiments ORDER BY id DESC LIMIT :limit;

-- name: window_truth
-- What each package of a window turned out to be worth: the realised move and the optimal action of a
-- validated outcome of a prediction of :model_kind on it (the same for every call on the package).
SELECT DISTINCT ON (p.package_id) p.package_id, o.price_return, o.optimal_action
FROM predictions p JOIN outcomes o ON o.prediction_id = p.id
WHERE p.package_id = ANY(CAST(:ids AS bigint[])) AND p.model_kind = :model_kind AND o.status = 'validated'
ORDER BY p.package_id, p.id;

-- name: window_calls
-- The live calls of :model_kind on a window's packages.
SELECT DISTINCT ON (p.package_id) p.package_id, p.action
FROM predictions p
WHERE p.package_id = ANY(CAST(:ids AS bigint[])) AND p.model_kind = :model_kind
ORDER BY p.package_id, p.id;

-- name: session_info
-- A round's model: how much it trained on, whether the gate promoted it, and whether any member of its
-- lineage trained on data ending after the window it is scored on (1: contaminated).
SELECT coalesce((s.metrics ->> 'train_episodes')::int, (s.config ->> 'train_experiences')::int) AS train_episodes,
       EXISTS (SELECT 1 FROM model_deployments d WHERE d.session_id = s.id AND d.action = 'promote') AS promoted,
       (SELECT count(*) FROM model_contamination(s.id, :slice_start))::int AS contaminated
FROM training_sessions s WHERE s.id = :id;

-- name: leakage_count
-- Rows of the leakage audit (must be 0).
SELECT count(*) FROM v_leakage_audit;

-- name: leakage
-- The leakage audit's rows.
SELECT check_name, session_id, item_id, detail FROM v_leakage_audit ORDER BY check_name, item_id LIMIT :limit;
