"""v_cnn_replay: which rows are episodes, and that they are ranked by the documented formula."""

import datetime as dt
import hashlib
import math

import sqlalchemy as sa

UTC = dt.UTC
T0 = dt.datetime(2022, 1, 10, tzinfo=UTC)


def _episode(conn, n, *, days_before, score, premium=False, times_trained=0, valid=True, status="validated"):
    ts = T0 - dt.timedelta(days=days_before)
    pkg = conn.execute(
        sa.text(
            "INSERT INTO input_packages (symbol, ts, payload, payload_format, data_hash, completeness_score, is_valid, "
            "is_premium) VALUES ('BTC-PERP', :ts, '\\x00', 'test', :h, 1.0, :valid, :premium) RETURNING id"
        ),
        {"ts": ts, "h": hashlib.sha256(str(n).encode()).digest(), "valid": valid, "premium": premium},
    ).scalar_one()
    pred = conn.execute(
        sa.text(
            "INSERT INTO predictions (prediction_key, package_id, model_kind, model_version, action, confidence, "
            "horizon_s, predicted_at) VALUES (:k, :p, 'cnn', 'v1', 'long', 0.5, 900, :ts) RETURNING id"
        ),
        {"k": f"view-{n}", "p": pkg, "ts": ts},
    ).scalar_one()
    if status == "validated":
        conn.execute(
            sa.text(
                "INSERT INTO outcomes (prediction_id, status, entry_price, exit_price, price_return, actual_profit, "
                "profitability_score, optimal_action, is_profitable, validated_at, times_trained) "
                "VALUES (:id, 'validated', 100, 101, 0.01, 0.009, :score, 'long', true, now(), :tt)"
            ),
            {"id": pred, "score": score, "tt": times_trained},
        )
    else:
        conn.execute(
            sa.text(
                "INSERT INTO outcomes (prediction_id, status, pending_reason) "
                "VALUES (:id, 'pending', 'candles missing')"
            ),
            {"id": pred},
        )
    return pred


def _expected(score, premium, days_before, times_trained):
    # The formula documented in sql/views/v_cnn_replay/v0001.sql (newest episode: 0 days before T0).
    recency = math.exp(-days_before / 7.0)
    return (0.6 * score + 0.2 * premium + 0.2 * recency) / (1 + times_trained)


def test_view_ranks_episodes_by_its_formula(engine):
    cases = {  # name: (days_before, score, premium, times_trained)
        "best": (0, 0.9, True, 0),
        "profitable_old": (14, 0.95, False, 0),
        "premium_mid": (3, 0.5, True, 0),
        "trained_often": (0, 0.9, True, 4),
        "plain": (1, 0.4, False, 0),
        "weak": (0, 0.1, False, 1),
    }
    ids = {}
    with engine.begin() as conn:
        for n, (name, (days, score, premium, tt)) in enumerate(cases.items()):
            ids[name] = _episode(conn, n, days_before=days, score=score, premium=premium, times_trained=tt)
        _episode(conn, 100, days_before=0, score=1.0, valid=False)  # invalid package: never an episode
        _episode(conn, 101, days_before=0, score=1.0, status="pending")  # not validated: never an episode
        rows = conn.execute(
            sa.text("SELECT episode_id, training_priority, recency FROM v_cnn_replay ORDER BY training_priority DESC")
        ).all()
    by_id = {v: k for k, v in ids.items()}
    assert {r.episode_id for r in rows} == set(ids.values())
    expected = {name: _expected(score, premium, days, tt) for name, (days, score, premium, tt) in cases.items()}
    for r in rows:
        assert math.isclose(r.training_priority, expected[by_id[r.episode_id]], rel_tol=1e-9)
    assert [by_id[r.episode_id] for r in rows] == sorted(expected, key=expected.get, reverse=True)
    # The properties the formula is meant to have:
    assert expected["best"] > expected["trained_often"]  # training on an episode lowers it
    assert [by_id[r.episode_id] for r in rows][0] == "best"


def test_premium_and_recency_raise_priority_at_equal_profitability(engine):
    with engine.begin() as conn:
        plain = _episode(conn, 1, days_before=2, score=0.7)
        premium = _episode(conn, 2, days_before=2, score=0.7, premium=True)
        recent = _episode(conn, 3, days_before=0, score=0.7)
        prio = dict(conn.execute(sa.text("SELECT episode_id, training_priority FROM v_cnn_replay")).all())
    assert prio[premium] > prio[plain] and prio[recent] > prio[plain]


def test_one_episode_per_cnn_call_and_profit_r_is_zero_at_break_even(engine):
    with engine.begin() as conn:
        win = _episode(conn, 200, days_before=0, score=0.73)
        loss = _episode(conn, 201, days_before=0, score=0.30)
        hold = _episode(conn, 202, days_before=0, score=0.5)
        # The RL agent's call on the same package is its own model's, not a CNN episode (v0001 counted it too).
        package = conn.execute(sa.text("SELECT package_id FROM predictions WHERE id = :p"), {"p": win}).scalar()
        rl = conn.execute(
            sa.text(
                "INSERT INTO predictions (prediction_key, package_id, model_kind, model_version, action, confidence, "
                "horizon_s, predicted_at) VALUES ('view-rl', :p, 'rl', 'v1', 'short', 0.5, 900, :ts) RETURNING id"
            ),
            {"p": package, "ts": T0},
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO outcomes (prediction_id, status, entry_price, exit_price, price_return, actual_profit, "
                "profitability_score, optimal_action, is_profitable, validated_at) "
                "VALUES (:id, 'validated', 100, 101, 0.01, -0.011, 0.2, 'long', false, now())"
            ),
            {"id": rl},
        )
        rows = {r.episode_id: r for r in conn.execute(sa.text("SELECT episode_id, profit_r FROM v_cnn_replay"))}
    assert set(rows) == {win, loss, hold}
    assert math.isclose(rows[win].profit_r, math.log(0.73 / 0.27)) and rows[win].profit_r > 0
    assert rows[loss].profit_r < 0 and rows[hold].profit_r == 0
