"""Blobs are never unpickled: a malicious checkpoint is refused by every path that reads one,
and the code inside it never runs.

The payload is a real ``torch.save`` file whose pickle calls ``builtins.open(MARKER, "w")`` when
unpickled (a subprocess proves that plain ``torch.load`` runs it). It is stored in place of a
session's checkpoints with a matching ``content_hash`` — what someone with write access to the
table could do — and then loaded, verified, replayed and resumed through the public paths.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import subprocess
import sys

import pytest
import sqlalchemy as sa
import torch

from app.demo import candle_episodes as episodes
from app.jobs import registry
from app.paths import REPO_ROOT
from app.recording import blobs, checkpoints
from app.trainer import cnn_train
from app.trainer import jobs as trainer_jobs
from tests.security.support import error_line, run_cli


class _Payload:
    """Unpickling this calls ``open(path, "w")``: creates the marker file."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def malicious_checkpoint(marker) -> bytes:
    buf = io.BytesIO()
    torch.save({"format": 1, "step": 0, "model": {"w": torch.zeros(2)}, "trap": _Payload(str(marker))}, buf)
    return buf.getvalue()


def test_the_payload_runs_code_when_unpickled_the_unsafe_way(tmp_path):
    # Guards the tests below against a payload that would be harmless anyway.
    marker = tmp_path / "ran"
    data = tmp_path / "ckpt.pt"
    data.write_bytes(malicious_checkpoint(marker))
    code = f"import torch; torch.load({str(data)!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    assert marker.exists()


@pytest.fixture(scope="module")
def session(module_db_url, real_candles_path):
    """A real, short CNN session (start, periodic and final checkpoints)."""
    engine = sa.create_engine(module_db_url)
    episodes.build_episodes(engine, real_candles_path, minutes=300)
    raw = {
        "symbol": episodes.SYMBOL,
        "min_profitability": "0",
        "epochs": "2",
        "batch_size": "16",
        "checkpoint_every": "5",
        "device": "cpu",
        "model_config": json.dumps(episodes.SMALL_MODEL),
    }
    result = cnn_train.train_cnn(engine, trainer_jobs.cnn_options(registry.get("train_cnn").validate(raw)))
    engine.dispose()
    return module_db_url, result["session_id"]


@pytest.fixture
def poisoned(session, tmp_path, monkeypatch):
    """Every checkpoint of the session replaced by the payload (hashes made to match); restored after."""
    url, sid = session
    marker = tmp_path / "ran"
    data = malicious_checkpoint(marker)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        saved = conn.execute(
            sa.text("SELECT id, state, content_hash FROM checkpoints WHERE session_id = :s"), {"s": sid}
        ).all()
        conn.execute(
            sa.text("UPDATE checkpoints SET state = :d, content_hash = :h, byte_length = :n WHERE session_id = :s"),
            {"d": data, "h": hashlib.sha256(data).digest(), "n": len(data), "s": sid},
        )
    monkeypatch.setenv("TRAINSRV_DATABASE_URL", url)
    yield engine, sid, marker
    with engine.begin() as conn:
        for row in saved:
            conn.execute(
                sa.text("UPDATE checkpoints SET state = :d, content_hash = :h, byte_length = :n WHERE id = :i"),
                {"d": row.state, "h": row.content_hash, "n": len(row.state), "i": row.id},
            )
        conn.execute(sa.text("UPDATE training_sessions SET status = 'succeeded' WHERE id = :s"), {"s": sid})
    engine.dispose()


def test_loading_refuses_the_payload(poisoned):
    engine, sid, marker = poisoned
    with engine.connect() as conn:
        with pytest.raises(checkpoints.CheckpointError, match="not a weights-only checkpoint; refused: .*GLOBAL"):
            checkpoints.load(conn, sid, 0)
    assert not marker.exists()


def test_verify_reports_the_payload_without_running_it(poisoned):
    _, sid, marker = poisoned
    code, out, err, _ = run_cli("verify", "--session", str(sid))
    assert code == 1, err
    assert "checkpoint_unreadable" in out and "weights" in out
    assert not marker.exists()


def test_replay_and_resume_refuse_the_payload_in_one_line(poisoned):
    engine, sid, marker = poisoned
    code, _, err, _ = run_cli("replay", "session", str(sid), "--verify")
    assert code == 1 and "not a weights-only checkpoint" in error_line(err)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE training_sessions SET status = 'failed' WHERE id = :s"), {"s": sid})
    code, _, err, _ = run_cli("train", "resume", str(sid))
    assert code == 1 and "not a weights-only checkpoint" in error_line(err)
    assert not marker.exists()


def test_a_pickle_stored_as_gradient_bytes_is_only_ever_numbers(tmp_path):
    # Gradient blobs are raw tensor bytes: a pickle in their place decodes as numbers or is refused.
    marker = tmp_path / "ran"
    data = malicious_checkpoint(marker)
    usable = len(data) // 4 * 4
    chunk = blobs.Chunk("w", 0, 1, "float32", (usable // 4,), "raw", blobs.checksum(data[:usable]), data[:usable])
    tensor = blobs.decode([chunk])
    assert tensor.dtype == torch.float32 and tensor.numel() == usable // 4
    wrong_shape = blobs.Chunk("w", 0, 1, "float32", (3,), "raw", blobs.checksum(data[:usable]), data[:usable])
    with pytest.raises(blobs.BlobError):
        blobs.decode([wrong_shape])
    assert not marker.exists()


# -- static: nothing in the product can unpickle ------------------------------------------------

UNSAFE_CALLS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("marshal", "loads"),
    ("dill", "load"),
    ("dill", "loads"),
    ("joblib", "load"),
    ("shelve", "open"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
}


def _calls():
    for path in sorted((REPO_ROOT / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
                yield path.relative_to(REPO_ROOT), node, owner, node.func.attr


def _keyword(node: ast.Call, name: str):
    value = next((k.value for k in node.keywords if k.arg == name), None)
    return value.value if isinstance(value, ast.Constant) else None


def test_every_torch_load_is_weights_only_and_nothing_unpickles():
    loads, unsafe = [], []
    for path, node, owner, attr in _calls():
        if (owner, attr) == ("torch", "load"):
            loads.append(path)
            if _keyword(node, "weights_only") is not True:
                unsafe.append(f"{path}:{node.lineno} torch.load without weights_only=True")
        elif (owner, attr) in UNSAFE_CALLS:
            unsafe.append(f"{path}:{node.lineno} {owner}.{attr}")
        elif (owner, attr) in (("np", "load"), ("numpy", "load")) and _keyword(node, "allow_pickle") is not False:
            if _keyword(node, "allow_pickle") is True:
                unsafe.append(f"{path}:{node.lineno} np.load(allow_pickle=True)")
    assert not unsafe, unsafe
    assert loads, "no torch.load found: the scan is looking in the wrong place"
