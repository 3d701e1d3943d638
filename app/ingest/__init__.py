"""The orchestrator's write path: candles, input packages and predictions, validated at the boundary.

    from app.ingest import ModelInputPackage, load_package, package_from_candles, ingest_candles

The validation, hashing and idempotency rules live in SQL functions (``sql/functions/ingest``)
so that the Python client (``app.client``) and orchestrators in other languages share them.
"""

import importlib

# Loaded on first use (PEP 562), so that `trainsrv ingest candles` and the CLI's start-up do not pay for
# numpy and the package builder.
_EXPORTS = {
    "DEFAULT_WINDOWS": "builder",
    "package_from_candles": "builder",
    "resample": "builder",
    "CandleReport": "candles",
    "ingest_candles": "candles",
    "ModelInputPackage": "package",
    "PackageTampered": "package",
    "decode_payload": "package",
    "load_package": "package",
    "load_packages": "package",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'app.ingest' has no attribute {name!r}")
    return getattr(importlib.import_module(f"app.ingest.{_EXPORTS[name]}"), name)
