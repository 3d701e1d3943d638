"""The plug-in interface for CNN models: ``package.module:factory``.

A factory is any callable ``factory(input_spec: InputSpec, **config) -> torch.nn.Module``. The
module's ``forward(x)`` takes ``x`` of shape ``(batch, len(timeframes), CHANNELS, window)``
(float32; see ``app.nets.inputs`` for the normalisation) and returns a dict of tensors:

* ``"logits"``     ``(batch, 3)`` — unnormalised scores of the actions, in ``ACTIONS`` order
  (long, short, hold): the direction / pivot classification head;
* ``"move"``       ``(batch,)``   — the predicted price move over the horizon, in percent;
* ``"confidence"`` ``(batch,)``   — a logit; ``sigmoid`` of it is the model's probability that its
  own call (argmax of ``logits``) is right.

``config`` comes from ``--model-config`` / the session config and is stored with the session,
so the same model can be rebuilt for resume and replay. The reference model is
``app.nets.cnn:build``. Models should avoid batch-norm style buffers updated in ``forward``:
an exact gradient replay runs no forward pass and cannot reproduce them.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from app.errors import ValidationError

if TYPE_CHECKING:
    import torch

ACTIONS = ("long", "short", "hold")
CHANNELS = 5  # open, high, low, close, volume per bar
REFERENCE = "app.nets.cnn:build"
RL_REFERENCE = "app.nets.dqn:build"  # the reference Q-network (same input, one value per action)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """The shape of one model input: which timeframes, how many bars each, which feature arrays.

    ``x`` is ``(batch, len(timeframes), channels, window)``. Timeframe ``i`` holds its newest
    ``windows[i]`` bars (all ``window`` when ``windows`` is empty), right-aligned: the newest bar
    is always the last position, and a timeframe with a shorter window is zero on the left.
    Channels are OHLCV (``CHANNELS``) then one per name in ``features``: the package's feature
    arrays (``app.ingest.features``, as stored), in the block of ``feature_timeframe`` (the series
    they were computed on), right-aligned like the bars; zero in the other timeframes' blocks.
    """

    timeframes: tuple[str, ...]
    window: int
    channels: int = CHANNELS
    windows: tuple[int, ...] = ()
    features: tuple[str, ...] = ()
    feature_timeframe: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "timeframes", tuple(self.timeframes))
        object.__setattr__(self, "windows", tuple(self.windows))
        object.__setattr__(self, "features", tuple(self.features))

    def shape(self) -> tuple[int, int, int]:
        return (len(self.timeframes), self.channels, self.window)

    def window_of(self, timeframe: str) -> int:
        """Bars of ``timeframe`` the model sees (the rest of its row is zero padding)."""
        return self.windows[self.timeframes.index(timeframe)] if self.windows else self.window

    def to_config(self) -> dict:
        """What a session stores to rebuild the spec (``InputSpec(**config)``)."""
        return {
            "timeframes": list(self.timeframes),
            "window": self.window,
            "channels": self.channels,
            "windows": list(self.windows),
            "features": list(self.features),
            "feature_timeframe": self.feature_timeframe,
        }


def load_factory(path: str) -> Callable[..., torch.nn.Module]:
    """Import ``package.module:factory``; errors name the ``model`` field and what is wrong."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValidationError("model", f"must look like package.module:factory, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValidationError("model", f"cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValidationError("model", f"{module_name!r} has no callable {attr!r}")
    return factory


def build_model(path: str, input_spec: InputSpec, config: dict | None = None) -> torch.nn.Module:
    import torch

    """Build the model at ``path`` and check its outputs on a dummy batch of two."""
    try:
        model = load_factory(path)(input_spec, **(config or {}))
    except TypeError as exc:  # an unknown or missing model_config key, or a factory of the wrong shape
        raise ValidationError("model_config", f"{path} does not accept this config: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise ValidationError("model", f"{path} returned {type(model).__name__}, not a torch.nn.Module")
    check_outputs(path, model, input_spec)
    return model


def check_outputs(path: str, model: torch.nn.Module, input_spec: InputSpec) -> None:
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros((2, *input_spec.shape())))
    model.train(was_training)
    expected = {"logits": (2, len(ACTIONS)), "move": (2,), "confidence": (2,)}
    if not isinstance(out, dict):
        raise ValidationError("model", f"{path}: forward must return a dict, got {type(out).__name__}")
    for key, shape in expected.items():
        got = tuple(out[key].shape) if key in out else None
        if got != shape:
            raise ValidationError("model", f"{path}: output {key!r} must have shape {shape}, got {got}")
