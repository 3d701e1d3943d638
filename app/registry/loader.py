"""A registry model as a ready-to-run torch module: ``load(engine, session_id)``, ``deployed(engine, kind, symbol)``.

The module is rebuilt from the session's config (model path and config, input spec) and its latest
checkpoint (hash-verified, ``torch.load(weights_only=True)``), and put in eval mode. Inputs are the
trainer's: ``package_array`` of a ``ModelInputPackage`` (app/trainer/inputs.py). The model's *call* is the
argmax of the CNN's logits or of the RL agent's Q-values, in ``ACTIONS`` order (long, short, hold).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import sqlalchemy as sa
import torch

from app.db import queries
from app.nets import dqn, inputs, interface
from app.recording import checkpoints
from app.registry import store
from app.trainer import evaluate


@dataclasses.dataclass
class LoadedModel:
    """A registry model ready to run: ``module`` (eval mode), its ``input_spec`` and ``version`` string."""

    module: torch.nn.Module
    model_kind: str
    symbol: str
    session_id: int
    version: str
    input_spec: interface.InputSpec
    model_path: str
    model_config: dict
    checkpoint_id: int
    checkpoint_step: int

    def inputs(self, packages) -> torch.Tensor:
        """The model input of ``ModelInputPackage`` objects, ``(len, timeframes, 5, window)`` float32."""
        return torch.from_numpy(np.stack([inputs.package_array(p, self.input_spec) for p in packages]))

    def calls(self, x: torch.Tensor) -> list[str]:
        """The model's action per input row."""
        if self.model_kind == "rl":
            return evaluate.greedy_calls(self.module, x)
        return [interface.ACTIONS[i] for i in evaluate.predict(self.module, x)["logits"].argmax(dim=1).tolist()]

    def call(self, package) -> tuple[str, float]:
        """The action on one package and a confidence in [0, 1] (the CNN's confidence head; for RL the
        softmax probability of the greedy action's Q-value)."""
        x = self.inputs([package])
        with torch.no_grad():
            out = self.module(x.to(next(self.module.parameters()).device))
        if self.model_kind == "rl":
            probs = torch.softmax(out[0].float(), dim=0)
            best = int(probs.argmax())
            return interface.ACTIONS[best], float(probs[best])
        return interface.ACTIONS[int(out["logits"][0].argmax())], float(torch.sigmoid(out["confidence"][0]))


def load(engine_or_conn: sa.Engine | sa.Connection, session_id: int, device: str = "cpu") -> LoadedModel:
    """The registry model of ``session_id`` (see the module docstring)."""
    if isinstance(engine_or_conn, sa.Engine):
        with engine_or_conn.connect() as conn:
            return load(conn, session_id, device)
    conn = engine_or_conn
    entry = store.model(conn, session_id)
    ckpt = checkpoints.load(conn, session_id, entry["checkpoint_step"])
    return _build(
        entry["model_kind"],
        entry["symbol"],
        session_id,
        entry["version"],
        store.config(conn, session_id),
        ckpt.id,
        ckpt.step,
        ckpt.state["model"],
        device,
    )


def deployed(engine: sa.Engine, model_kind: str, symbol: str, device: str = "cpu") -> LoadedModel | None:
    """The model deployed for ``model_kind`` and ``symbol``, or None when none is. Read through the SQL
    function ``deployed_model``, so it works for the orchestrator's role, which reads no table."""
    with engine.connect() as conn:
        row = conn.execute(queries.get("registry.deployed_model"), {"model_kind": model_kind, "symbol": symbol}).first()
    if row is None:
        return None
    state = bytes(row.state)
    if hashlib.sha256(state).digest() != bytes(row.content_hash):
        raise checkpoints.CheckpointError(
            f"checkpoint {row.checkpoint_id} of deployed {row.version}: content hash "
            "mismatch, the stored state is corrupted"
        )
    return _build(
        row.model_kind,
        row.symbol,
        row.session_id,
        row.version,
        row.config,
        row.checkpoint_id,
        row.checkpoint_step,
        checkpoints.deserialize(state)["model"],
        device,
    )


def _build(
    kind: str,
    symbol: str,
    session_id: int,
    version: str,
    config: dict,
    checkpoint_id: int,
    step: int,
    weights: dict,
    device: str,
) -> LoadedModel:
    spec = interface.InputSpec(**config["input_spec"])
    build = dqn.build_q_network if kind == "rl" else interface.build_model
    module = build(config["model"], spec, config.get("model_config") or {})
    module.load_state_dict(weights)
    module.to(device).eval()
    return LoadedModel(
        module,
        kind,
        symbol,
        session_id,
        version,
        spec,
        config["model"],
        config.get("model_config") or {},
        checkpoint_id,
        step,
    )
