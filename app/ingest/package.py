"""The ModelInputPackage: what a model saw at time ``ts`` for ``symbol``.

A package travels and is stored as one JSON document (``payload_format = 'mip-json-v1'``)::

    {"ts": "2022-01-05T12:00:00.000000Z",          # UTC, microseconds, trailing Z
     "symbol": "BTC-PERP",
     "ohlcv": {"1m": {"t": [epoch seconds, ...],   # bar open times, oldest first
                      "bars": [[open, high, low, close, volume], ...]}, ...},
     "windows": {"1m": 60, ...},                   # declared window length per timeframe
     "features": {"rsi_14": [...], ...},           # flat float arrays
     "orderbook": null | [...] | [[...], ...],     # 1-D or 2-D float array
     "hidden_state": null | [...] | [[...], ...],
     "metadata": {...}}                            # free JSON object

Non-finite floats are written as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (JSON
has no literal for them); such a package is stored but flagged invalid. The canonical encoding
is PostgreSQL's ``jsonb::text`` of that document (see ``app.ingest.canonical``) and
``data_hash`` is its SHA-256. The database computes both in ``ingest_package``; this module
computes the same bytes locally and re-verifies the hash whenever a package is read back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa

from app.db import queries
from app.errors import TrainsrvError, ValidationError
from app.ingest import canonical, timeframes

PAYLOAD_FORMAT = "mip-json-v1"
OHLCV_COLUMNS = ("open", "high", "low", "close", "volume")
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
# The same bounds as ingest_metadata_problem (sql/functions/ingest/v0002.sql).
MAX_METADATA_DEPTH = 32
MAX_METADATA_BYTES = 65536


class PackageTampered(TrainsrvError):
    """A stored package's payload no longer matches its ``data_hash``."""


class PackageUndecodable(TrainsrvError):
    """A stored package's payload matches its hash but is not a package this code can decode."""


def ts_text(ts: dt.datetime) -> str:
    """``ts`` (UTC) as the document writes it: four-digit year, microseconds, ``Z`` (as PostgreSQL's
    ``to_char(..., 'YYYY-...')``; ``strftime('%Y')`` does not pad years before 1000)."""
    return f"{ts.year:04d}-{ts:%m-%dT%H:%M:%S.%f}Z"


@dataclasses.dataclass(eq=False)
class ModelInputPackage:
    """What a model saw at ``ts`` (aware, normalised to UTC) for ``symbol``.

    ``ohlcv[tf]`` is a float64 array of shape (window, 5) — open, high, low, close, volume —
    oldest bar first; ``bar_ts[tf]`` holds the bars' open times as int64 epoch seconds.
    ``windows`` declares the intended window length per timeframe (default: the actual
    lengths); a window shorter than declared is stored but flagged. ``features`` maps a name
    to a 1-D float64 array. Construction checks structure (types, shapes, timeframe labels)
    and raises ``ValidationError`` naming the field; data quality (NaN, OHLC consistency,
    gaps, ...) is judged by the database and recorded as validation flags.
    """

    symbol: str
    ts: dt.datetime
    ohlcv: dict[str, np.ndarray]
    bar_ts: dict[str, np.ndarray]
    features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    orderbook: np.ndarray | None = None
    hidden_state: np.ndarray | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    windows: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.symbol, str) or not self.symbol.strip():
            raise ValidationError("symbol", "must be a non-empty string")
        self.ts = _utc(self.ts, "ts")
        self.ohlcv = {tf: _ohlcv_array(tf, a) for tf, a in _mapping("ohlcv", self.ohlcv).items()}
        self.bar_ts = _bar_times(self.ohlcv, _mapping("bar_ts", self.bar_ts))
        self.features = {
            name: _float_array(f"features.{name}", a, (1,)) for name, a in _mapping("features", self.features).items()
        }
        self.orderbook = _optional_array("orderbook", self.orderbook)
        self.hidden_state = _optional_array("hidden_state", self.hidden_state)
        self.metadata = _metadata(self.metadata)
        self.windows = _windows(self.windows, self.ohlcv)

    # -- encoding ---------------------------------------------------------------------------

    def to_document(self) -> dict[str, Any]:
        """The package as a JSON-ready dict (non-finite floats as "NaN" / "Infinity" strings)."""
        return {
            "symbol": self.symbol,
            "ts": ts_text(self.ts),
            "ohlcv": {tf: {"t": self.bar_ts[tf].tolist(), "bars": _json_floats(a)} for tf, a in self.ohlcv.items()},
            "windows": dict(self.windows),
            "features": {k: _json_floats(v) for k, v in self.features.items()},
            "orderbook": None if self.orderbook is None else _json_floats(self.orderbook),
            "hidden_state": None if self.hidden_state is None else _json_floats(self.hidden_state),
            "metadata": self.metadata,
        }

    def to_json(self) -> str:
        """A compact JSON text of the document, for sending.

        The same document as ``to_document``, written by orjson straight from the numpy arrays
        (about ten times faster than ``json.dumps`` of lists: this is the client's hot path).
        orjson writes each float with the same shortest round-trip digits as Python's ``repr``
        (only the exponent spelling differs, ``1e-7`` for ``1e-07``), so the server's canonical
        bytes still equal ``canonical_bytes()``; tests check this on awkward and random floats."""
        doc = {
            "symbol": self.symbol,
            "ts": ts_text(self.ts),
            "ohlcv": {
                tf: {"t": np.ascontiguousarray(self.bar_ts[tf]), "bars": _wire_floats(a)}
                for tf, a in self.ohlcv.items()
            },
            "windows": self.windows,
            "features": {k: _wire_floats(v) for k, v in self.features.items()},
            "orderbook": None if self.orderbook is None else _wire_floats(self.orderbook),
            "hidden_state": None if self.hidden_state is None else _wire_floats(self.hidden_state),
            # Metadata keeps json's rules (e.g. int keys become strings), as it did when validated.
            "metadata": orjson.Fragment(json.dumps(self.metadata, separators=(",", ":"), allow_nan=False)),
        }
        return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY).decode()

    def canonical_bytes(self) -> bytes:
        """The canonical encoding: UTF-8 of PostgreSQL's ``jsonb::text`` of the document."""
        return canonical.render(self.to_document()).encode()

    @property
    def data_hash(self) -> bytes:
        """SHA-256 of the canonical encoding (32 bytes); equals ``input_packages.data_hash``."""
        return hashlib.sha256(self.canonical_bytes()).digest()

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> ModelInputPackage:
        """Rebuild a package from its document (the inverse of ``to_document``)."""
        ohlcv = doc.get("ohlcv") or {}
        return cls(
            symbol=doc["symbol"],
            ts=dt.datetime.strptime(doc["ts"], _TS_FORMAT).replace(tzinfo=dt.UTC),
            ohlcv={tf: _decode(w["bars"]).reshape(-1, 5) for tf, w in ohlcv.items()},
            bar_ts={tf: np.asarray(w["t"], dtype=np.int64) for tf, w in ohlcv.items()},
            features={k: _decode(v) for k, v in (doc.get("features") or {}).items()},
            orderbook=None if doc.get("orderbook") is None else _decode(doc["orderbook"]),
            hidden_state=None if doc.get("hidden_state") is None else _decode(doc["hidden_state"]),
            metadata=doc.get("metadata") or {},
            windows=doc.get("windows"),
        )

    def identical(self, other: ModelInputPackage) -> bool:
        """True when both packages hold bit-for-bit the same arrays and equal scalars."""
        return self.canonical_bytes() == other.canonical_bytes() and all(
            _same_bits(getattr(self, f), getattr(other, f))
            for f in ("ohlcv", "bar_ts", "features", "orderbook", "hidden_state")
        )


# -- reading back ----------------------------------------------------------------------------


def decode_payload(payload: bytes, data_hash: bytes, package_id: int | None = None) -> ModelInputPackage:
    """Verify ``payload`` against ``data_hash`` and decode it; PackageTampered on mismatch."""
    if hashlib.sha256(payload).digest() != bytes(data_hash):
        raise PackageTampered(
            f"input package {package_id}: payload does not match its data_hash (modified after it was stored)"
        )
    try:
        return ModelInputPackage.from_document(json.loads(payload))
    except (ValidationError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        # Stored by an older, laxer version (or edited along with its hash): named, so callers can skip it.
        raise PackageUndecodable(
            f"input package {package_id} cannot be decoded: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None


def load_package(conn: sa.Connection, package_id: int) -> ModelInputPackage:
    """Read input package ``package_id``, re-verifying its SHA-256 (raises PackageTampered)."""
    row = conn.execute(queries.get("ingest.package_payloads"), {"ids": [int(package_id)]}).first()
    if row is None:
        raise TrainsrvError(f"no input package with id {package_id}")
    return decode_payload(bytes(row.payload), bytes(row.data_hash), row.id)


def load_packages(conn: sa.Connection, package_ids: list[int]) -> dict[int, ModelInputPackage]:
    """Read many packages in one query (each hash verified); ids that do not exist are absent."""
    rows = conn.execute(queries.get("ingest.package_payloads"), {"ids": [int(i) for i in package_ids]})
    return {r.id: decode_payload(bytes(r.payload), bytes(r.data_hash), r.id) for r in rows}


# -- structure checks (raise ValidationError naming the field) -------------------------------


def _utc(value: Any, field: str) -> dt.datetime:
    if not isinstance(value, dt.datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(field, "must be a timezone-aware datetime")
    return value.astimezone(dt.UTC)


def _mapping(field: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValidationError(field, f"must be a dict, got {type(value).__name__}")
    for key in value:
        if not isinstance(key, str) or not key:
            raise ValidationError(field, f"keys must be non-empty strings, got {key!r}")
    return value


def _float_array(field: str, value: Any, ndims: tuple[int, ...]) -> np.ndarray:
    if isinstance(value, (str, bytes)):
        raise ValidationError(field, "must be an array of numbers, got a string")
    try:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"dtype {array.dtype} is not numeric")
        array = array.astype(np.float64, copy=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(field, f"must be an array of numbers ({exc})") from None
    if array.ndim not in ndims:
        raise ValidationError(field, f"must have {' or '.join(map(str, ndims))} dimension(s), got shape {array.shape}")
    return array


def _ohlcv_array(tf: str, value: Any) -> np.ndarray:
    field = f"ohlcv.{tf}"
    timeframes.seconds(tf, field)
    array = _float_array(field, value, (2,))
    if array.shape[1] != len(OHLCV_COLUMNS):
        raise ValidationError(field, f"must have shape (window, 5) [open, high, low, close, volume], got {array.shape}")
    return array


def _bar_times(ohlcv: dict[str, np.ndarray], bar_ts: dict) -> dict[str, np.ndarray]:
    if set(bar_ts) != set(ohlcv):
        raise ValidationError("bar_ts", f"timeframes {sorted(bar_ts)} differ from ohlcv's {sorted(ohlcv)}")
    out = {}
    for tf, times in bar_ts.items():
        array = np.asarray(times)
        if array.size == 0:
            array = array.astype(np.int64)
        if array.dtype.kind not in "iu" or array.shape != (len(ohlcv[tf]),):
            raise ValidationError(
                f"bar_ts.{tf}",
                f"must be {len(ohlcv[tf])} integer epoch seconds, got dtype {array.dtype} shape {array.shape}",
            )
        out[tf] = array.astype(np.int64, copy=False)
    return out


def _optional_array(field: str, value: Any) -> np.ndarray | None:
    return None if value is None else _float_array(field, value, (1, 2))


def _metadata(value: Any) -> dict[str, Any]:
    # Free-form like any JSON object (the SQL path stores whatever keys it gets, "" included);
    # the key type, nesting and size are checked here.
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValidationError("metadata", "must be a dict with string keys")
    _check_depth(value)  # before anything recursive below
    try:
        text = canonical.render(json.loads(json.dumps(value, allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise ValidationError("metadata", f"must be JSON (finite numbers, string keys): {exc}") from None
    if "\x00" in json.dumps(value):
        raise ValidationError("metadata", "must not contain NUL characters")
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise ValidationError("metadata", f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    return value


def _check_depth(value: Any) -> None:
    """Nesting of at most MAX_METADATA_DEPTH levels (the top object is level 0), walked without recursion."""
    todo = [(value, 0)]
    while todo:
        item, level = todo.pop()
        if level >= MAX_METADATA_DEPTH:
            raise ValidationError("metadata", f"must not nest deeper than {MAX_METADATA_DEPTH} levels")
        if isinstance(item, dict):
            todo.extend((v, level + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            todo.extend((v, level + 1) for v in item)


def _windows(value: Any, ohlcv: dict[str, np.ndarray]) -> dict[str, int]:
    if value is None:
        return {tf: len(a) for tf, a in ohlcv.items()}
    _mapping("windows", value)
    for tf, n in value.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 1_000_000:
            raise ValidationError(f"windows.{tf}", f"must be an integer in [1, 1000000], got {n!r}")
    return {tf: int(n) for tf, n in value.items()}


# -- array <-> JSON ----------------------------------------------------------------------------


def _json_floats(array: np.ndarray) -> list:
    # -0.0 + 0.0 is +0.0: PostgreSQL numeric has no negative zero, so normalise it here.
    array = np.asarray(array, dtype=np.float64) + 0.0
    if np.isfinite(array).all():
        return array.tolist()
    return _tokens(array.tolist())


def _wire_floats(array: np.ndarray) -> np.ndarray | list:
    """A float array ready for orjson: C-contiguous float64 with -0.0 made +0.0 (as in
    ``_json_floats``), or nested lists with "NaN" / "Infinity" tokens when not all finite
    (orjson would write null for those)."""
    array = np.asarray(array, dtype=np.float64) + 0.0  # a fresh C-contiguous array
    if np.isfinite(array).all():
        return array
    return _tokens(array.tolist())


def _tokens(values: Any) -> Any:
    if isinstance(values, list):
        return [_tokens(v) for v in values]
    if math.isnan(values):
        return "NaN"
    if math.isinf(values):
        return "Infinity" if values > 0 else "-Infinity"
    return values


def _decode(values: Any) -> np.ndarray:
    # numpy parses "NaN" / "Infinity" / "-Infinity" with float(), which accepts exactly these.
    return np.array(values, dtype=np.float64)


def _same_bits(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_bits(a[k], b[k]) for k in a)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
