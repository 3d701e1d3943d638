-- v_model_live_performance v0001: each deployment period of a model (from its promotion or rollback to
-- the next one of its kind and symbol) with the realised results of the predictions made with its
-- version in that period (predictions.created_at), next to the offline evaluation that promoted it.
--   live_profit_per_call: mean outcomes.actual_profit of its validated long / short calls (after costs)
--   live_hit_rate:        share of those calls with actual_profit > 0
--   live_accuracy:        share of validated predictions whose action was the optimal one
--   offline_*:            the candidate's numbers on its evaluation slice in the promoting decision
CREATE VIEW v_model_live_performance AS
WITH periods AS (
    SELECT d.id AS deployment_id,
           d.model_kind,
           d.symbol,
           d.session_id,
           model_version(d.model_kind, d.session_id) AS version,
           d.action,
           d.decided_at AS deployed_at,
           lead(d.decided_at) OVER (PARTITION BY d.model_kind, d.symbol ORDER BY d.id) AS replaced_at
    FROM model_deployments d
    WHERE d.action IN ('promote', 'rollback')
)
SELECT p.deployment_id,
       p.model_kind,
       p.symbol,
       p.session_id,
       p.version,
       p.action,
       p.deployed_at,
       p.replaced_at,
       p.replaced_at IS NULL AS is_current,
       live.predictions,
       live.validated,
       live.calls,
       live.hit_rate AS live_hit_rate,
       live.profit_per_call AS live_profit_per_call,
       live.total_profit AS live_total_profit,
       live.accuracy AS live_accuracy,
       (ev.evidence -> 'candidate' ->> 'mean_profit_per_call')::float8 AS offline_profit_per_call,
       (ev.evidence -> 'candidate' ->> 'hit_rate')::float8 AS offline_hit_rate,
       (ev.evidence -> 'candidate' ->> 'accuracy')::float8 AS offline_accuracy,
       (ev.evidence -> 'candidate' ->> 'baseline_accuracy')::float8 AS offline_baseline_accuracy,
       ev.id AS promoted_by
FROM periods p
LEFT JOIN LATERAL (
    SELECT count(*) AS predictions,
           count(*) FILTER (WHERE o.status = 'validated') AS validated,
           count(*) FILTER (WHERE o.status = 'validated' AND pr.action <> 'hold') AS calls,
           avg((o.actual_profit > 0)::int) FILTER (WHERE o.status = 'validated' AND pr.action <> 'hold') AS hit_rate,
           avg(o.actual_profit) FILTER (WHERE o.status = 'validated' AND pr.action <> 'hold') AS profit_per_call,
           coalesce(sum(o.actual_profit) FILTER (WHERE o.status = 'validated' AND pr.action <> 'hold'), 0)
               AS total_profit,
           avg((pr.action = o.optimal_action)::int) FILTER (WHERE o.status = 'validated') AS accuracy
    FROM predictions pr
    JOIN input_packages ip ON ip.id = pr.package_id
    LEFT JOIN outcomes o ON o.prediction_id = pr.id
    WHERE pr.model_kind = p.model_kind
      AND pr.model_version = p.version
      AND ip.symbol = p.symbol
      AND pr.created_at >= p.deployed_at
      AND (p.replaced_at IS NULL OR pr.created_at < p.replaced_at)
) live ON true
LEFT JOIN LATERAL (
    SELECT d.id, d.evidence FROM model_deployments d
    WHERE d.action = 'promote' AND d.session_id = p.session_id AND d.id <= p.deployment_id
    ORDER BY d.id DESC LIMIT 1
) ev ON true;
