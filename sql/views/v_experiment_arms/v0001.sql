-- v_experiment_arms v0001: one row per experiment, family, arm and source, pooled over its seeds and rounds.
-- profit_per_call is total profit over all calls (after the round-trip cost, a fraction of the price);
-- seed_mean / seed_sd are the mean and sample standard deviation over seeds of each seed's pooled
-- profit per call; accuracy_edge is accuracy - baseline_accuracy averaged over rounds.
CREATE VIEW v_experiment_arms AS
WITH per_seed AS (
    SELECT experiment_id, family, arm, source, seed,
           count(*) AS rounds, sum(episodes) AS episodes, sum(calls) AS calls, sum(total_profit) AS total_profit,
           sum(total_profit) / nullif(sum(calls), 0) AS profit_per_call,
           sum(hit_rate * calls) / nullif(sum(calls) FILTER (WHERE hit_rate IS NOT NULL), 0) AS hit_rate,
           avg(accuracy - baseline_accuracy) AS accuracy_edge
    FROM experiment_results
    GROUP BY experiment_id, family, arm, source, seed
)
SELECT experiment_id, family, arm, source,
       count(*) AS seeds, max(rounds) AS rounds, sum(episodes) AS episodes, sum(calls) AS calls,
       sum(total_profit) / nullif(sum(calls), 0) AS profit_per_call,
       avg(profit_per_call) AS seed_mean_profit_per_call,
       stddev_samp(profit_per_call) AS seed_sd_profit_per_call,
       avg(hit_rate) AS seed_mean_hit_rate,
       avg(accuracy_edge) AS seed_mean_accuracy_edge,
       stddev_samp(accuracy_edge) AS seed_sd_accuracy_edge
FROM per_seed
GROUP BY experiment_id, family, arm, source;
