"""Issue 18: verify checks that a succeeded session is whole and what replay decodes with; replay --verify
passes only for the whole session from step 0; one undecodable package stops neither verify nor training."""

from __future__ import annotations

import json

import pytest

from app.session_replay import verify
from app.trainer import cnn_train
from tests.security.support import error_line, run_cli
from tests.session_replay.test_session_replay import OPTIONS, _exec, _first_param, victim, world  # noqa: F401


def _kinds(engine, session_id=None) -> set[tuple]:
    return {(p.kind, p.step, p.param) for p in verify.verify_integrity(engine, session_id).problems}


def _cli(world, capsys, *argv) -> tuple[int, str, str]:  # noqa: F811
    """``trainsrv ARGV`` in this process against the world's database: (exit code, stdout, stderr)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRAINSRV_DATABASE_URL", world.url)
        code, out, err, _ = run_cli(*argv)
    return code, out, err


# -- item 5: a partial check is not a verified session ------------------------------------------------


def test_a_deleted_tail_is_found_by_verify_and_fails_replay_verify(world, victim, capsys):  # noqa: F811
    _exec(world.engine, "DELETE FROM checkpoints WHERE session_id = :s AND step > 4", s=victim)
    _exec(world.engine, "DELETE FROM gradient_blobs WHERE session_id = :s AND step > 4", s=victim)
    _exec(world.engine, "DELETE FROM training_steps WHERE session_id = :s AND step > 4", s=victim)
    steps = _exec(
        world.engine, "SELECT (metrics ->> 'steps')::int FROM training_sessions WHERE id = :s", s=victim
    ).scalar_one()
    assert steps >= 6
    found = _kinds(world.engine, victim)
    assert ("missing_step", 5, None) in found and ("missing_checkpoint", steps, None) in found
    code, out, _ = _cli(world, capsys, "replay", "session", str(victim), "--verify")
    assert code == 1 and f"stopped at step 4 of the {steps} steps the session recorded" in out
    assert "bit-exact" not in out


def test_a_deleted_start_checkpoint_fails_replay_verify(world, victim, capsys):  # noqa: F811
    _exec(world.engine, "DELETE FROM checkpoints WHERE session_id = :s AND step = 0", s=victim)
    assert ("missing_checkpoint", 0, None) in _kinds(world.engine, victim)
    code, out, _ = _cli(world, capsys, "replay", "session", str(victim), "--verify")
    assert code == 1 and "not at step 0" in out and "bit-exact" not in out


def test_a_whole_session_still_verifies(world, capsys):  # noqa: F811
    sid = world.exact["session_id"]
    assert verify.verify_integrity(world.engine, sid).ok
    code, out, _ = _cli(world, capsys, "replay", "session", str(sid), "--verify")
    assert code == 0 and "bit-exact" in out


# -- item 6: what replay relies on ------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, kind",
    [
        ("dtype = 'float64'", "blob_bad_dtype"),
        ("shape = array_append(shape, 1)", "blob_bad_shape"),
        ("codec = 'zstd'", "blob_bad_codec"),
        ("param_name = param_name || '_x'", "blob_unknown_param"),
    ],
)
def test_changed_blob_metadata_is_named_by_verify(world, victim, change, kind, capsys):  # noqa: F811
    param = _first_param(world.engine, victim, 3)
    _exec(
        world.engine,
        f"UPDATE gradient_blobs SET {change} WHERE session_id = :s AND step = 3 AND param_name = :p",
        s=victim,
        p=param,
    )
    problems = verify.verify_integrity(world.engine, victim).problems
    assert kind in {p.kind for p in problems}, [p.describe() for p in problems]
    code, _, err = _cli(world, capsys, "replay", "session", str(victim), "--verify")
    assert code == 1 and "Traceback" not in err


def test_a_truncated_blob_with_matching_length_and_checksum_is_named(world, victim):  # noqa: F811
    param = _exec(
        world.engine,
        "SELECT min(param_name) FROM gradient_blobs WHERE session_id = :s AND step = 3 "
        "AND chunk_count = 1 AND byte_length > 8",
        s=victim,
    ).scalar_one()
    _exec(
        world.engine,
        "UPDATE gradient_blobs SET data = substring(data FROM 1 FOR byte_length - 4), "
        "byte_length = byte_length - 4, checksum = sha256(substring(data FROM 1 FOR byte_length - 4)) "
        "WHERE session_id = :s AND step = 3 AND param_name = :p",
        s=victim,
        p=param,
    )
    assert ("blob_bad_length", 3, param) in _kinds(world.engine, victim)


def test_a_config_without_input_spec_is_named_not_a_traceback(world, victim, capsys):  # noqa: F811
    _exec(world.engine, "UPDATE training_sessions SET config = config - 'input_spec' WHERE id = :s", s=victim)
    assert "session_config_invalid" in {p.kind for p in verify.verify_integrity(world.engine, victim).problems}
    code, _, err = _cli(world, capsys, "replay", "session", str(victim), "--verify")
    assert code == 1 and "config" in error_line(err)


# -- item 1: one undecodable package ------------------------------------------------------------------


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("poison", [{"metadata": _nested(400)}, {"windows": {"1m": 60.0}}])
def test_an_undecodable_package_is_skipped_by_name(world, poison, capsys, caplog):  # noqa: F811
    """A package stored before the boundary checks (here: rewritten with a matching hash) is reported by
    id by verify and skipped by training; verify and training go on for every other package."""
    package_id = _exec(world.engine, "SELECT min(package_id) FROM v_cnn_replay").scalar_one()
    original = _exec(world.engine, "SELECT payload, data_hash FROM input_packages WHERE id = :i", i=package_id).one()
    doc = json.loads(bytes(original.payload))
    poisoned = json.dumps({**doc, **poison}).encode()
    _exec(
        world.engine,
        "UPDATE input_packages SET payload = :p, data_hash = sha256(:p) WHERE id = :i",
        p=poisoned,
        i=package_id,
    )
    try:
        report = verify.verify_integrity(world.engine)
        assert [(p.kind, p.row_id) for p in report.problems if p.table == "input_packages"] == [
            ("package_undecodable", package_id)
        ]
        assert f"input package {package_id} cannot be decoded" in report.problems[0].detail
        code, out, err = _cli(world, capsys, "verify")
        assert code == 1 and f"id {package_id}" in out and "Traceback" not in err
        options = dict(OPTIONS, epochs=1, seed=21, max_episodes=100_000, min_profitability=0.0)
        result = cnn_train.train_cnn(world.engine, cnn_train.CnnTrainOptions(**options))
        assert result["status"] == "succeeded"
        assert f"skipping input package {package_id}" in caplog.text
    finally:
        _exec(
            world.engine,
            "UPDATE input_packages SET payload = :p, data_hash = :h WHERE id = :i",
            p=bytes(original.payload),
            h=bytes(original.data_hash),
            i=package_id,
        )
