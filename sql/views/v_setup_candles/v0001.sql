-- v_setup_candles v0001: the candles around every validated setup (the rows of v_profitable_setups),
-- from two horizons before the decision to one horizon after the horizon ended, in every stored
-- timeframe of the symbol, so an analyst sees what price did before, during and after the call.
--   phase        = 'before' (the bar opened at or before the decision: the outcome never uses it),
--                  'during' (opened after the decision and before horizon_end) or 'after'
--   close_return = close / entry_price - 1, the bar's close against the call's entry price
-- Filter by prediction_id: the candles' primary key serves each setup's window with one range scan.
CREATE VIEW v_setup_candles AS
SELECT o.prediction_id,
       k.symbol,
       c.timeframe,
       c.ts,
       extract(epoch FROM c.ts - p.predicted_at) AS offset_s,
       CASE
           WHEN c.ts <= p.predicted_at THEN 'before'
           WHEN c.ts < p.predicted_at + make_interval(secs => p.horizon_s) THEN 'during'
           ELSE 'after'
       END AS phase,
       c.open,
       c.high,
       c.low,
       c.close,
       c.volume,
       c.close / nullif(o.entry_price, 0) - 1 AS close_return
FROM outcomes o
JOIN predictions p ON p.id = o.prediction_id
JOIN input_packages k ON k.id = p.package_id
JOIN candles c ON c.symbol = k.symbol
              AND c.ts >= p.predicted_at - make_interval(secs => 2 * p.horizon_s)
              AND c.ts < p.predicted_at + make_interval(secs => 2 * p.horizon_s)
WHERE o.status = 'validated' AND k.is_valid;
