"""Rebuild what a recorded session trained — its model and optimizer — from its row alone.

Replay, verification and replay-onto work on any session recorded through
``app.recording.session`` (CNN, RL, ...), so they never import a trainer. The session row holds
everything needed:

* ``model_name`` — the model factory's import path ``package.module:factory``
  (``app.nets.interface.load_factory``); ``config["model"]`` overrides it when present;
* ``config["input_spec"]`` — when present, the factory's first argument
  (``app.nets.interface.InputSpec(**input_spec)``);
* ``config["model_config"]`` — keyword arguments of the factory;
* ``config["optimizer"]`` — the ``OptimizerSpec`` (hyper-parameters and LR schedule);
* ``config["replay"]["step_offset"]`` — set on sessions recorded by replay-onto: their step ``s``
  applied the learning rate of step ``step_offset + s`` of the schedule (the offset accumulates
  when a replay-onto session is itself replayed onto something else).

A trainer whose sessions follow a different convention registers its own model builder with
``register(model_kind, build)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from app.errors import ValidationError
from app.nets import interface
from app.recording.optim import OptimizerSpec

ModelBuilder = Callable[[str, dict], torch.nn.Module]

_builders: dict[str, ModelBuilder] = {}


def register(model_kind: str, build: ModelBuilder) -> None:
    """Use ``build(model_name, config)`` to rebuild the models of ``model_kind`` sessions."""
    _builders[model_kind] = build


def build_model(model_kind: str, model_name: str, config: dict) -> torch.nn.Module:
    """A fresh (untrained) model of a session, on the CPU; load a checkpoint into it next."""
    builder = _builders.get(model_kind, conventional_model)
    if not isinstance(config, dict):
        raise ValidationError("config", f"the session's config is not an object: {type(config).__name__}")
    try:
        model = builder(model_name, config)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        # E.g. a config without input_spec, or with a model_config the factory does not take.
        raise ValidationError(
            "config", f"cannot rebuild {model_name} from the session's config: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise ValidationError("model", f"{model_name} built {type(model).__name__}, not a torch.nn.Module")
    return model


def conventional_model(model_name: str, config: dict) -> torch.nn.Module:
    """``factory([InputSpec(**config["input_spec"])], **config["model_config"])``."""
    factory = interface.load_factory(config.get("model", model_name))
    kwargs = dict(config.get("model_config") or {})
    raw_spec = config.get("input_spec")
    if raw_spec is None:
        return factory(**kwargs)
    spec = interface.InputSpec(**dict(raw_spec, timeframes=tuple(raw_spec["timeframes"])))
    return factory(spec, **kwargs)


def optimizer_spec(config: dict) -> OptimizerSpec:
    """The session's optimizer spec (``config["optimizer"]``)."""
    if "optimizer" not in config:
        raise ValidationError("config.optimizer", "the session records no optimizer spec; it cannot be replayed")
    return OptimizerSpec.from_config(config["optimizer"])


def step_offset(config: dict) -> int:
    """How many source steps precede step 1 of a replay-onto session (0 for trained sessions)."""
    return int((config.get("replay") or {}).get("step_offset", 0))


def lr_schedule(config: dict) -> Callable[[int], float]:
    """The learning rate of each (1-based) step of the session, as training applied it."""
    spec, offset = optimizer_spec(config), step_offset(config)
    return lambda step: spec.lr_at(step + offset)
