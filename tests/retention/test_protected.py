"""The keep rule with the registry in it (v_sessions_protected v0002): deployed models and their
warm-start lineage are never pruned."""

import sqlalchemy as sa

SESSION = (
    "INSERT INTO training_sessions (model_kind, model_name, seed, torch_version, trainsrv_version, device, "
    "capture_policy, replay_exact, status, init_session_id, init_checkpoint_id) VALUES ('cnn', 'm', 0, 'x', "
    "'x', 'cpu', 'full', true, 'succeeded', :init, :ckpt) RETURNING id"
)
CHECKPOINT = (
    "INSERT INTO checkpoints (session_id, step, kind, params_hash, optimizer_hash, content_hash, "
    "byte_length, state) VALUES (:s, 0, 'final', sha256('p'), sha256('o'), sha256('c'), 1, '\\x00') "
    "RETURNING id"
)


def _protected(conn) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for session_id, reason in conn.execute(sa.text("SELECT session_id, reason FROM v_sessions_protected")):
        found.setdefault(session_id, set()).add(reason)
    return found


def test_deployed_models_and_their_warm_start_origin_are_protected(engine):
    with engine.begin() as conn:
        origin = conn.execute(sa.text(SESSION), {"init": None, "ckpt": None}).scalar_one()
        ckpt = conn.execute(sa.text(CHECKPOINT), {"s": origin}).scalar_one()
        deployed = conn.execute(sa.text(SESSION), {"init": origin, "ckpt": ckpt}).scalar_one()
        refused = conn.execute(sa.text(SESSION), {"init": None, "ckpt": None}).scalar_one()
        assert _protected(conn) == {}
        conn.execute(
            sa.text(
                "INSERT INTO model_deployments (model_kind, symbol, action, session_id, source, reason) "
                "VALUES ('cnn', 'BTC-PERP', 'promote', :d, 'gate', 'better'), "
                "('cnn', 'BTC-PERP', 'refuse', :r, 'gate', 'worse')"
            ),
            {"d": deployed, "r": refused},
        )
        protected = _protected(conn)
    assert protected[deployed] == {"deployed"}
    assert protected[origin] == {f"lineage of session {deployed} (deployed)"}
    assert refused not in protected
