"""Warm starts: ``--init deployed | session:ID | scratch``.

* ``deployed`` (the default, for the automatic loop too): the weights of the model deployed for the
  session's kind and symbol; scratch when none is deployed, or when the deployed model is not the
  same architecture (model path, model config, input spec), with the reason recorded.
* ``session:ID``: the latest checkpoint of that session; refused unless it is the same kind and
  architecture.
* ``scratch``: random weights from the seed.

Only the weights are taken: the optimizer, schedule and RNG start fresh, so a warm-started session is
recorded, checkpointed (step 0 holds the warm weights) and replayed like any other. The session row
keeps ``init_session_id`` / ``init_checkpoint_id``: the lineage the contamination check walks.
"""

from __future__ import annotations

import dataclasses
import logging

import sqlalchemy as sa

from app.db import queries
from app.errors import ValidationError
from app.recording import sessions

log = logging.getLogger(__name__)

MODES = ("deployed", "scratch")


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """Where a session's weights come from; ``state`` is the model state_dict (None: scratch)."""

    requested: str
    session_id: int | None = None
    checkpoint_id: int | None = None
    state: dict | None = None
    note: str = ""

    def to_config(self) -> dict:
        return {
            "requested": self.requested,
            "session_id": self.session_id,
            "checkpoint_id": self.checkpoint_id,
            "note": self.note,
        }


def parse(text: str) -> tuple[str, int | None]:
    """``deployed`` / ``scratch`` / ``session:ID`` -> (mode, session id)."""
    if text in MODES:
        return text, None
    prefix, _, number = text.partition(":")
    if prefix == "session" and number.isdigit() and int(number) > 0:
        return "session", int(number)
    raise ValidationError("init", f"must be deployed, scratch or session:ID, got {text!r}")


def resolve(conn: sa.Connection, text: str, *, model_kind: str, symbol: str, architecture: dict) -> WarmStart:
    """The warm start ``text`` asks for a new ``model_kind`` session on ``symbol`` whose architecture is
    ``{"model", "model_config", "input_spec"}`` (as stored in session configs)."""
    mode, session_id = parse(text)
    if mode == "scratch":
        return WarmStart(text, note="scratch requested")
    if mode == "deployed":
        row = conn.execute(queries.get("registry.deployed"), {"model_kind": model_kind, "symbol": symbol}).first()
        if row is None:
            return WarmStart(text, note=f"no {model_kind} model deployed for {symbol}: scratch")
        session_id = row.session_id
    source = _source(conn, session_id)
    problem = _mismatch(source, model_kind, architecture)
    if problem is not None:
        if mode == "session":
            raise ValidationError("init", f"session {session_id} {problem}")
        log.warning(
            "deployed %s model for %s (session %s) %s: starting from scratch", model_kind, symbol, session_id, problem
        )
        return WarmStart(text, note=f"deployed session {session_id} {problem}: scratch")
    from app.recording import checkpoints

    ckpt = checkpoints.load(conn, session_id)
    return WarmStart(
        text, session_id, ckpt.id, ckpt.state["model"], note=f"weights of session {session_id} step {ckpt.step}"
    )


def _source(conn: sa.Connection, session_id: int):
    return sessions.get(conn, session_id, field="init")


def _mismatch(source, model_kind: str, architecture: dict) -> str | None:
    if source.model_kind != model_kind:
        return f"is a {source.model_kind} session, not {model_kind}"
    for key, wanted in architecture.items():
        if source.config.get(key) != wanted:
            return f"has another {key} ({source.config.get(key)!r}, this session: {wanted!r})"
    return None


def apply(model, warm: WarmStart) -> None:
    """Load the warm-start weights into ``model`` (nothing for scratch)."""
    if warm.state is not None:
        model.load_state_dict(warm.state)


def record_session(
    engine: sa.Engine, model_kind: str, opts, config: dict, device, warm: WarmStart, job_id, writer_options
):
    """Open a trainer's recorded session (``opts``: its options: model, seed, capture, checkpoints); the row
    names the checkpoint the weights started from, the lineage the registry and retention read."""
    from app.recording.session import SessionRecorder, SessionSpec

    spec = SessionSpec(
        model_kind,
        opts.model,
        config,
        opts.seed,
        str(device),
        opts.capture,
        opts.checkpoint_every,
        job_id,
        init_session_id=warm.session_id,
        init_checkpoint_id=warm.checkpoint_id,
    )
    return SessionRecorder.start(engine, spec, writer_options)
