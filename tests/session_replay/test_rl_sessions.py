"""Replay is generic: an RL (double DQN) session recorded through the same layer replays bit for bit,
verifies clean, and replays onto its own checkpoint, with no RL-specific replay code."""

import sqlalchemy as sa

from app.db.engine import make_engine
from app.nets import dqn
from app.recording import checkpoints
from app.session_replay import exact, onto, options, verify
from app.trainer import rl_train
from tests.rl_replay.support import SYMBOL, real_experiences


def test_rl_session_replays_bit_for_bit(module_db_url, real_candles_path):
    engine = make_engine(module_db_url)
    try:
        real_experiences(engine, real_candles_path)
        opts = rl_train.RlTrainOptions(
            symbol=SYMBOL,
            steps=30,
            batch_size=32,
            checkpoint_every=10,
            seed=3,
            agent=dqn.DqnSettings(target_update_every=20),
            device="cpu",
        )
        sid = rl_train.train_rl(engine, opts)["session_id"]
        report = exact.replay_session(engine, sid, options.ReplayOptions(verify=True))
        assert report.exact is True and [c.step for c in report.checks] == [10, 20, 30]
        integrity = verify.verify_integrity(engine, sid)
        assert integrity.ok and integrity.checked["packages"] > 0  # the states its batches used
        replayed = onto.replay_onto(engine, sid, f"{sid}@10", options.OntoOptions(from_step=10))
        with engine.connect() as conn:
            final = checkpoints.load(conn, sid)
            kind = conn.execute(
                sa.text("SELECT model_kind FROM training_sessions WHERE id = :s"), {"s": replayed["session_id"]}
            ).scalar_one()
        assert replayed["final_params_hash"] == final.params_hash.hex() and kind == "rl"
    finally:
        engine.dispose()
