"""The orchestrator's write path: candles, input packages and predictions, validated at the boundary.

    from app.ingest import ModelInputPackage, load_package, package_from_candles, ingest_candles

The validation, hashing and idempotency rules live in SQL functions (``sql/functions/ingest``)
so that the Python client (``app.client``) and orchestrators in other languages share them.
"""

from app.ingest.builder import DEFAULT_WINDOWS, package_from_candles, resample
from app.ingest.candles import CandleReport, ingest_candles
from app.ingest.package import (
                                ModelInputPackage,
                                PackageTampered,
                                decode_payload,
                                load_package,
                                load_packages,
)

__all__ = [
    "DEFAULT_WINDOWS", "CandleReport", "ModelInputPackage", "PackageTampered", "decode_payload",
    "ingest_candles", "load_package", "load_packages", "package_from_candles", "resample",
]
