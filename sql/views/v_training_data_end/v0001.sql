-- v_training_data_end v0001: for every item a trainer can put in a batch, the latest time its data
-- depends on. model_kind 'cnn': item_id is an episode (prediction) id and data_end its label's horizon
-- end; 'rl': item_id is an experience id and data_end the latest of its prediction's horizon end, its
-- state and its next state package times. A session that trained only on items with data_end <= t
-- saw nothing from after t (session_trained_through, the RL hold-out, model_contamination).
CREATE VIEW v_training_data_end AS
SELECT 'cnn'::text AS model_kind,
       p.id AS item_id,
       ip.symbol,
       p.predicted_at + make_interval(secs => p.horizon_s) AS data_end
FROM predictions p
JOIN input_packages ip ON ip.id = p.package_id
UNION ALL
SELECT 'rl'::text,
       e.id,
       e.symbol,
       greatest(p.predicted_at + make_interval(secs => p.horizon_s), st.ts, nxt.ts)
FROM experiences e
JOIN input_packages st ON st.id = e.state_package_id
LEFT JOIN predictions p ON p.id = e.prediction_id
LEFT JOIN input_packages nxt ON nxt.id = e.next_state_package_id;
