"""The analysts' views compute what their documentation says."""

import json

import pytest
import sqlalchemy as sa

SESSION = sa.text(
    "INSERT INTO training_sessions (model_kind, model_name, seed, torch_version, trainsrv_version, device, "
    "capture_policy, replay_exact, metrics, training_value) VALUES ('cnn', 'm', 1, 't', 'v', 'cpu', 'full', true, "
    ":metrics, :value) RETURNING id"
)


def _session(conn, value, evaluation):
    return conn.execute(SESSION, {"metrics": json.dumps({"evaluation": evaluation}), "value": value}).scalar()


def test_session_value_ranks_and_flags_baseline_beaters(engine):
    with engine.begin() as conn:
        good = _session(
            conn,
            0.7,
            {
                "accuracy": 0.6,
                "baseline_accuracy": 0.5,
                "total_profit": 0.02,
                "episodes": 50,
                "calls": 10,
                "mean_profit_per_call": 0.002,
                "best_constant_profit_per_call": 0.001,
            },
        )
        lucky = _session(
            conn,
            0.55,
            {
                "accuracy": 0.4,
                "baseline_accuracy": 0.5,
                "total_profit": 0.05,
                "calls": 10,
                "mean_profit_per_call": 0.005,
                "best_constant_profit_per_call": 0.0,
            },
        )
        empty = _session(conn, None, {})
        # Accurate and profitable, but always going long would have earned more per call.
        trend = _session(
            conn,
            0.5,
            {
                "accuracy": 0.6,
                "baseline_accuracy": 0.5,
                "total_profit": 0.01,
                "calls": 10,
                "mean_profit_per_call": 0.001,
                "best_constant_profit_per_call": 0.002,
            },
        )
        # Would beat the baselines, but its slice was contaminated.
        leaked = _session(
            conn,
            0.4,
            {
                "accuracy": 0.9,
                "baseline_accuracy": 0.5,
                "total_profit": 0.05,
                "calls": 10,
                "mean_profit_per_call": 0.005,
                "best_constant_profit_per_call": 0.0,
                "contaminated": True,
            },
        )
        for step, loss in [(1, 2.0), (2, 1.5), (3, 1.2)]:
            conn.execute(
                sa.text(
                    "INSERT INTO training_steps (session_id, step, loss_total, learning_rate, batch_ids) "
                    "VALUES (:s, :step, :loss, 0.001, '{}')"
                ),
                {"s": good, "step": step, "loss": loss},
            )
        conn.execute(
            sa.text(
                "INSERT INTO gradient_blobs (session_id, step, param_name, chunk_index, chunk_count, dtype, shape, codec, "
                "byte_length, checksum, data) VALUES (:s, 1, 'w', 0, 1, 'float32', '{2}', 'raw', 8, :c, :d)"
            ),
            {"s": good, "c": b"\0" * 32, "d": b"\1" * 8},
        )
        rows = {r.session_id: r for r in conn.execute(sa.text("SELECT * FROM v_session_value"))}
    assert rows[good].steps == 3 and rows[good].last_step == 3 and rows[good].final_loss_raw == 1.2
    assert rows[good].gradient_bytes == 8 and rows[good].eval_episodes == 50
    assert rows[good].beats_baseline and not rows[lucky].beats_baseline and not rows[empty].beats_baseline
    assert not rows[trend].beats_baseline and not rows[leaked].beats_baseline and rows[leaked].eval_contaminated
    assert [rows[s].value_rank for s in (good, lucky, trend, leaked, empty)] == [1, 2, 3, 4, 5]
    assert rows[good].first_loss_raw == 2.0 and rows[good].min_loss_raw == 1.2
    assert rows[empty].steps == 0 and rows[empty].gradient_bytes == 0


def test_profitable_setups_rank_within_symbol_and_skip_invalid(engine):
    with engine.begin() as conn:
        ids = {}
        for i, (symbol, valid, score) in enumerate(
            [("BTC", True, 0.9), ("BTC", True, 0.4), ("BTC", False, 1.0), ("ETH", True, 0.2)]
        ):
            pkg = conn.execute(
                sa.text(
                    "INSERT INTO input_packages (symbol, ts, payload, payload_format, data_hash, completeness_score, "
                    "is_valid) VALUES (:s, now(), '\\x00', 't', :h, 1, :v) RETURNING id"
                ),
                {"s": symbol, "h": bytes([i]) * 32, "v": valid},
            ).scalar()
            pred = conn.execute(
                sa.text(
                    "INSERT INTO predictions (prediction_key, package_id, model_kind, model_version, action, confidence, "
                    "horizon_s, predicted_at) VALUES (:k, :p, 'cnn', 'v', 'long', 0.5, 60, now()) RETURNING id"
                ),
                {"k": str(i), "p": pkg},
            ).scalar()
            conn.execute(
                sa.text(
                    "INSERT INTO outcomes (prediction_id, status, actual_profit, profitability_score, optimal_action, "
                    "is_profitable, validated_at) VALUES (:p, 'validated', :score - 0.5, :score, 'long', :score > 0.5, "
                    "now())"
                ),
                {"p": pred, "score": score},
            )
            ids[(symbol, score)] = pred
        rows = conn.execute(
            sa.text("SELECT prediction_id, symbol, profit_rank FROM v_profitable_setups ORDER BY symbol, profit_rank")
        ).all()
    assert [(r.prediction_id, r.profit_rank) for r in rows] == [
        (ids[("BTC", 0.9)], 1),
        (ids[("BTC", 0.4)], 2),
        (ids[("ETH", 0.2)], 1),
    ]


@pytest.mark.parametrize("view", ["v_profitable_setups", "v_session_value", "v_system_stats"])
def test_views_answer_on_an_empty_database(engine, view):
    with engine.connect() as conn:
        conn.execute(sa.text(f"SELECT * FROM {view}")).all()  # noqa: S608 - fixed identifiers
