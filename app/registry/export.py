"""``trainsrv models export``: a registry model for any language.

Writes into a directory:

* ``state_dict.pt`` — the weights (``torch.save`` of the state_dict: tensors only, loadable with
  ``torch.load(weights_only=True)``);
* ``model.pt`` — TorchScript (``torch.jit.trace`` on a zero input) when the model allows it, loadable
  with ``torch.jit.load`` in Python or ``torch::jit::load`` in C++ without trainsrv;
* ``spec.json`` — version, kind, symbol, the model path and config, the input spec and its
  normalisation, the output layout, the action order and the files' SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import sqlalchemy as sa
import torch

from app.nets.interface import ACTIONS
from app.registry import loader

NORMALISATION = (
    "per timeframe, the newest `window` bars (oldest first) as (5, window): open/high/low/close as "
    "100 * (price / last close of the window - 1), volume as log1p(volume) minus its window mean; "
    "timeframes stacked shortest first: input (batch, timeframes, 5, window) float32"
)
OUTPUTS = {
    "cnn": "dict: logits (batch, 3) in `actions` order, move (batch,) percent, confidence (batch,) logit; "
    "the call is argmax(logits)",
    "rl": "Q-values (batch, 3) in `actions` order; the call is argmax",
}


def export(engine: sa.Engine, session_id: int, out: Path) -> dict:
    """Write the model of ``session_id`` into ``out`` (created); returns the spec written."""
    model = loader.load(engine, session_id)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.module.state_dict(), out / "state_dict.pt")
    files = {"state_dict": "state_dict.pt"}
    torchscript_error = _torchscript(model, out / "model.pt")
    if torchscript_error is None:
        files["torchscript"] = "model.pt"
    spec = {
        "version": model.version,
        "model_kind": model.model_kind,
        "symbol": model.symbol,
        "session_id": session_id,
        "checkpoint_id": model.checkpoint_id,
        "checkpoint_step": model.checkpoint_step,
        "model": model.model_path,
        "model_config": model.model_config,
        "input_spec": {
            "timeframes": list(model.input_spec.timeframes),
            "window": model.input_spec.window,
            "channels": model.input_spec.channels,
            "normalisation": NORMALISATION,
        },
        "outputs": OUTPUTS[model.model_kind],
        "actions": list(ACTIONS),
        "files": files,
        "torchscript_error": torchscript_error,
        "sha256": {name: hashlib.sha256((out / path).read_bytes()).hexdigest() for name, path in files.items()},
    }
    (out / "spec.json").write_text(json.dumps(spec, indent=2) + "\n")
    return spec


def _torchscript(model: loader.LoadedModel, path: Path) -> str | None:
    """Trace the module to TorchScript; the reason it cannot be, or None."""
    # Two rows: some layers take a batch-of-one branch that the trace would bake in.
    example = torch.zeros((2, *model.input_spec.shape()))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is what C++ / Java consumers load
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks; the tests compare batches
            traced = torch.jit.trace(model.module, example, strict=False)
        traced.save(str(path))
    except Exception as exc:  # any model may refuse tracing; the state_dict is exported regardless
        path.unlink(missing_ok=True)
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    return None
