"""The model registry: trained models back to the orchestrator (docs/models.md).

Every succeeded CNN / RL training session is a candidate model (``v_models``); ``model_deployments``
records which one is deployed per (kind, symbol) and every promotion, refusal and rollback with its
evidence. ``gate`` decides promotions on a clean later evaluation slice, ``loader`` turns a registry
entry into a ready torch module, ``warm`` starts a session from one, ``export`` writes one out for
other languages. Modules here import torch only where a model is built.
"""
