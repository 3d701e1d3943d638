-- v_profitable_setups v0002: validated outcomes of predictions made from valid packages, with the
-- package and prediction, ranked by profitability within each symbol (rank 1 = most profitable).
-- Changed from v0001: the model's own forecast (predicted_move, predicted_pivot) and horizon_end are
-- appended, so the call sits beside the outcome (same leading columns: replaced in place).
CREATE VIEW v_profitable_setups AS
SELECT o.prediction_id,
       p.package_id,
       k.symbol,
       p.predicted_at,
       p.model_kind,
       p.model_version,
       p.action,
       p.confidence,
       p.horizon_s,
       k.is_premium,
       k.completeness_score,
       o.entry_price,
       o.exit_price,
       o.price_return,
       o.max_favorable_excursion,
       o.max_adverse_excursion,
       o.actual_profit,
       o.profitability_score,
       o.optimal_action,
       o.is_profitable,
       o.validated_at,
       rank() OVER (PARTITION BY k.symbol
                    ORDER BY o.profitability_score DESC, o.actual_profit DESC) AS profit_rank,
       p.predicted_move,
       p.predicted_pivot,
       p.predicted_at + make_interval(secs => p.horizon_s) AS horizon_end
FROM outcomes o
JOIN predictions p ON p.id = o.prediction_id
JOIN input_packages k ON k.id = p.package_id
WHERE o.status = 'validated' AND k.is_valid;
