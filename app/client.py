"""The orchestrator's Python client: record input packages and the predictions made from them.

    from app.client import Client, Prediction
    from app.ingest import package_from_candles

    with Client() as client:                      # or Client(engine) / Client("postgresql://...")
        package_id, prediction_id = client.record(package, Prediction(
            model_kind="cnn", model_version="v3", action="long", confidence=0.71, horizon_s=300))

Every call goes through the SQL functions in ``sql/functions/ingest`` (``ingest_record``,
``ingest_package``, ``ingest_prediction``) — the same ones an orchestrator in another language
calls — so validation, hashing and idempotency are identical on both paths. Retrying a call
is always safe: a package is keyed by its content hash, a prediction by its ``prediction_key``.
Input the caller must fix raises ``app.errors.ValidationError`` naming the field, and nothing
is stored. A ``Client`` holds one connection; use one client per thread.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa

from app.config import Settings, get_settings
from app.db import engine as db_engine
from app.db import queries
from app.errors import ValidationError
from app.ingest.package import ModelInputPackage, load_package

__all__ = ["Client", "PackageResult", "Prediction", "rules_from_settings"]


@dataclasses.dataclass
class Prediction:
    """A model's call on a package. ``predicted_at`` defaults to the package's ``ts``;
    ``prediction_key`` defaults to a hash of (package, model kind and version, horizon, time),
    so a retry of the same prediction is recognised. ``package_id`` is only needed with
    ``insert_prediction`` (``record`` fills it in)."""

    model_kind: str
    model_version: str
    action: str
    confidence: float
    horizon_s: int
    predicted_move: float | None = None
    predicted_pivot: float | None = None
    predicted_at: dt.datetime | None = None
    prediction_key: str | None = None
    package_id: int | None = None

    def to_document(self) -> dict[str, Any]:
        """The JSON object ``ingest_prediction`` takes (unset optional fields left out)."""
        doc = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                doc[field.name] = _json_value(field.name, value)
        return doc


@dataclasses.dataclass(frozen=True)
class PackageResult:
    """What the database decided about one package."""

    package_id: int
    data_hash: bytes
    is_valid: bool
    completeness_score: float
    validation_flags: dict[str, bool]
    created: bool

    @property
    def failed_checks(self) -> list[str]:
        """Names of the validation checks this package failed (empty when valid)."""
        return sorted(name for name, passed in self.validation_flags.items() if not passed)


def rules_from_settings(settings: Settings) -> dict[str, Any]:
    """The ``p_rules`` argument of the ingest SQL functions, from the settings."""
    return {
        "min_data_completeness": settings.min_data_completeness,
        "max_clock_skew_s": settings.max_clock_skew_s,
        "max_payload_bytes": settings.max_payload_bytes,
        "required_fields": [f.strip() for f in settings.package_required_fields.split(",") if f.strip()],
    }


class Client:
    """Write path for orchestrators. ``engine_or_url``: an Engine, a database URL, or None for
    the configured database (``TRAINSRV_DATABASE_URL`` or the embedded server)."""

    def __init__(self, engine_or_url: sa.Engine | str | None = None, settings: Settings | None = None):
        self.settings = settings or get_settings()
        if isinstance(engine_or_url, sa.Engine):
            self.engine = engine_or_url
        elif engine_or_url:
            self.engine = db_engine.make_engine(db_engine.normalise_url(engine_or_url))
        else:
            self.engine = db_engine.get_engine(self.settings)
        self._rules = json.dumps(rules_from_settings(self.settings))
        self._conn: sa.Connection | None = None

    # -- the orchestrator's calls -------------------------------------------------------------

    def record(self, package: ModelInputPackage, prediction: Prediction) -> tuple[int, int]:
        """Store ``package`` and ``prediction`` in one transaction; returns (package_id, prediction_id).

        Idempotent: recording the same package and prediction again returns the same ids. An
        invalid package (failed checks) is still stored, with its flags, for audit."""
        params = {"package": self._package_json(package), "prediction": _prediction_json(prediction),
                  "rules": self._rules}
        row = self._execute("ingest.record", params)
        return row.package_id, row.prediction_id

    def insert_package(self, package: ModelInputPackage) -> PackageResult:
        """Store one package (idempotent on its content hash) and return the verdict."""
        row = self._execute("ingest.insert_package",
                            {"package": self._package_json(package), "rules": self._rules})
        return _package_result(row)

    def insert_prediction(self, prediction: Prediction, package_id: int | None = None) -> int:
        """Store one prediction on an already stored package; returns its id (idempotent on its key)."""
        if package_id is not None:
            prediction = dataclasses.replace(prediction, package_id=package_id)
        if prediction.package_id is None:
            raise ValidationError("package_id", "required: the id of a stored package")
        row = self._execute("ingest.insert_prediction",
                            {"prediction": _prediction_json(prediction), "rules": self._rules})
        return row.prediction_id

    def insert_packages(self, packages: Iterable[ModelInputPackage], batch_size: int = 500) -> list[PackageResult]:
        """Bulk store: each batch is COPYed into a staging table and run through
        ``ingest_package`` in one statement and one transaction (a batch is all or nothing).
        Results come back in input order."""
        results: list[PackageResult] = []
        for batch in _batches(packages, batch_size):
            texts = [self._package_json(p) for p in batch]
            results.extend(self._with_retry(lambda conn: _bulk_batch(conn, texts, self._rules)))
        return results

    def load_package(self, package_id: int) -> ModelInputPackage:
        """Read a stored package back (its hash re-verified)."""
        return self._with_retry(lambda conn: load_package(conn, package_id))

    # -- connection handling ------------------------------------------------------------------

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connection(self) -> sa.Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self.engine.connect()
        return self._conn

    def _execute(self, query: str, params: dict[str, Any]) -> Any:
        """The single row of a one-row named query, read inside its own transaction."""
        return self._with_retry(lambda conn: conn.execute(queries.get(query), params).one())

    def _with_retry(self, work):
        # Every write here is idempotent, so one retry after a dropped connection is safe.
        for attempt in (1, 2):
            conn = self._connection()
            try:
                with conn.begin():
                    return work(conn)
            except sa.exc.DBAPIError as exc:
                _raise_validation(exc)
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    def _package_json(self, package: ModelInputPackage) -> str:
        if not isinstance(package, ModelInputPackage):
            raise ValidationError("package", f"must be a ModelInputPackage, got {type(package).__name__}")
        text = package.to_json()
        if len(text) > self.settings.max_payload_bytes:
            raise ValidationError("package", f"payload is {len(text)} bytes, over the limit of "
                                             f"{self.settings.max_payload_bytes} bytes")
        return text


def _bulk_batch(conn: sa.Connection, texts: list[str], rules: str) -> list[PackageResult]:
    conn.execute(queries.get("ingest.create_package_staging"))
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy("COPY ingest_package_staging (seq, doc) FROM STDIN") as copy:
        for seq, text in enumerate(texts):
            copy.write_row((seq, text))
    rows = conn.execute(queries.get("ingest.merge_package_staging"), {"rules": rules}).all()
    return [_package_result(r) for r in rows]


def _package_result(row: Any) -> PackageResult:
    return PackageResult(row.package_id, bytes(row.data_hash), row.is_valid, row.completeness_score,
                         dict(row.validation_flags), row.created)


def _prediction_json(prediction: Prediction | dict) -> str:
    if isinstance(prediction, dict):
        prediction = Prediction(**prediction)
    if not isinstance(prediction, Prediction):
        raise ValidationError("prediction", f"must be a Prediction, got {type(prediction).__name__}")
    return json.dumps(prediction.to_document())


def _json_value(field: str, value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValidationError(field, "must be a timezone-aware datetime")
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        raise ValidationError(field, f"must be a finite number, got {value}")
    return value


def _raise_validation(exc: sa.exc.DBAPIError) -> None:
    orig = exc.orig
    if isinstance(orig, psycopg.errors.InvalidParameterValue) and orig.diag.column_name:
        field = orig.diag.column_name
        message = orig.diag.message_primary or str(orig)
        raise ValidationError(field, message.removeprefix(f"{field}: ")) from None


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
