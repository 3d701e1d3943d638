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

Speed: a write is one prepared statement on a connection in autocommit mode, so one network
round trip (the function call is a single statement, hence atomic on its own); bulk loads send
each batch as one array to ``ingest_packages`` and spread the batches over several connections.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import queue
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import psycopg
import sqlalchemy as sa
from psycopg.rows import namedtuple_row
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect

from app.config import Settings, get_settings
from app.db import engine as db_engine
from app.db import queries
from app.errors import ValidationError
from app.ingest.package import ModelInputPackage, load_package

__all__ = ["Client", "PackageResult", "Prediction", "rule_overrides", "rules_from_settings"]

# A batch that loses a deadlock to a concurrent batch (same packages, other order) is re-run.
DEADLOCK_RETRIES = 3


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
    """The ingest validation rules the settings describe (the shape of ``ingest_config.rules``)."""
    return {
        "min_data_completeness": settings.min_data_completeness,
        "max_clock_skew_s": settings.max_clock_skew_s,
        "max_payload_bytes": settings.max_payload_bytes,
        "required_fields": [f.strip() for f in settings.package_required_fields.split(",") if f.strip()],
    }


def rule_overrides(settings: Settings) -> dict[str, Any]:
    """The ``p_rules`` argument the client sends: only the rules its settings change from the defaults.

    The server's configuration (``ingest_config``) decides the rules; only a trainer or the owner may
    override them, so a client left at the defaults sends ``{}`` and works for every role."""
    defaults = rules_from_settings(Settings())
    return {k: v for k, v in rules_from_settings(settings).items() if v != defaults[k]}


class _Session:
    """One pooled connection in autocommit mode: each statement is its own transaction."""

    def __init__(self, engine: sa.Engine):
        self._pooled = engine.raw_connection()
        self.pg: psycopg.Connection = self._pooled.driver_connection
        self.pg.autocommit = True

    @property
    def broken(self) -> bool:
        return self.pg.closed or self.pg.broken

    def close(self) -> None:
        if self.broken:
            self._pooled.invalidate()
            return
        self.pg.autocommit = False  # the pool's other users expect the default
        self._pooled.close()


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
        self._rules = json.dumps(rule_overrides(self.settings))
        self._session: _Session | None = None

    # -- the orchestrator's calls -------------------------------------------------------------

    def record(self, package: ModelInputPackage, prediction: Prediction) -> tuple[int, int]:
        """Store ``package`` and ``prediction`` in one transaction; returns (package_id, prediction_id).

        Idempotent: recording the same package and prediction again returns the same ids. An
        invalid package (failed checks) is still stored, with its flags, for audit."""
        params = {
            "package": self._package_json(package),
            "prediction": _prediction_json(prediction),
            "rules": self._rules,
        }
        row = self._one("ingest.record", params)
        return row.package_id, row.prediction_id

    def insert_package(self, package: ModelInputPackage) -> PackageResult:
        """Store one package (idempotent on its content hash) and return the verdict."""
        row = self._one("ingest.insert_package", {"package": self._package_json(package), "rules": self._rules})
        return _package_result(row)

    def insert_prediction(self, prediction: Prediction, package_id: int | None = None) -> int:
        """Store one prediction on an already stored package; returns its id (idempotent on its key)."""
        if package_id is not None:
            prediction = dataclasses.replace(prediction, package_id=package_id)
        if prediction.package_id is None:
            raise ValidationError("package_id", "required: the id of a stored package")
        row = self._one("ingest.insert_prediction", {"prediction": _prediction_json(prediction), "rules": self._rules})
        return row.prediction_id

    def insert_packages(
        self, packages: Iterable[ModelInputPackage], batch_size: int = 500, connections: int | None = None
    ) -> list[PackageResult]:
        """Bulk store: each batch is sent as one array and run through ``ingest_package`` in
        one statement, hence one transaction (a batch is all or nothing).
        Batches run on up to ``connections`` connections at once (default: the setting
        ``ingest_bulk_connections``) while this thread encodes the next ones. Results come back
        in input order. If a batch fails, batches after it may or may not be stored; calling
        again with the same packages is safe (idempotent)."""
        workers = max(1, int(connections or self.settings.ingest_bulk_connections))
        batches = ([self._package_json(p) for p in batch] for batch in _batches(packages, batch_size))
        return _BulkLoad(self, workers).run(batches)

    # -- the models it runs (docs/models.md) -----------------------------------------------------

    def deployed_version(self, model_kind: str, symbol: str) -> str | None:
        """The version string of the model deployed for ``model_kind`` and ``symbol`` (None: none); one cheap
        query, so a bot can poll it (or LISTEN on ``trainsrv_models``) and reload only when it changes."""
        return self._one("registry.deployed_version", {"model_kind": model_kind, "symbol": symbol}).version

    def deployed_model(self, model_kind: str, symbol: str, device: str = "cpu"):
        """The deployed model for ``model_kind`` and ``symbol`` as an ``app.registry.loader.LoadedModel``:
        ``.module`` (a torch module in eval mode), ``.input_spec``, ``.version`` (record it as the
        prediction's ``model_version``), ``.call(package)`` -> (action, confidence). None when none is deployed."""
        from app.registry import loader

        return loader.deployed(self.engine, model_kind, symbol, device)

    def load_package(self, package_id: int) -> ModelInputPackage:
        """Read a stored package back (its hash re-verified)."""
        with self.engine.connect() as conn:
            return load_package(conn, package_id)

    # -- connection handling ------------------------------------------------------------------

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _own_session(self) -> _Session:
        """The client's own connection (autocommit), reopened after a drop."""
        if self._session is not None and self._session.broken:
            self.close()
        if self._session is None:
            self._session = _Session(self.engine)
        return self._session

    def _connection(self) -> psycopg.Connection:
        return self._own_session().pg

    def _one(self, query: str, params: dict[str, Any]) -> Any:
        """The single row of a one-row named query: one prepared statement, one round trip."""
        return self._with_retry(lambda: _execute(self._connection(), query, params).fetchone())

    def _with_retry(self, work):
        # Every write here is idempotent, so one retry after a dropped connection is safe.
        for attempt in (1, 2):
            try:
                return work()
            except psycopg.OperationalError:
                if attempt == 2 or self._session is None or not self._session.broken:
                    raise
        raise AssertionError("unreachable")

    def _package_json(self, package: ModelInputPackage) -> str:
        if not isinstance(package, ModelInputPackage):
            raise ValidationError("package", f"must be a ModelInputPackage, got {type(package).__name__}")
        text = package.to_json()
        if len(text) > self.settings.max_payload_bytes:
            raise ValidationError(
                "package", f"payload is {len(text)} bytes, over the limit of {self.settings.max_payload_bytes} bytes"
            )
        return _refuse_nul("package", text)


class _BulkLoad:
    """Batches of package texts, merged by ``workers`` threads, each on its own connection.

    The calling thread encodes the next batches while the workers wait on the database (psycopg
    releases the GIL there); a bounded queue keeps at most ``2 * workers`` batches in memory."""

    def __init__(self, client: Client, workers: int):
        self.client = client
        self.workers = workers
        self.todo: queue.Queue = queue.Queue(maxsize=2 * workers)
        self.results: dict[int, list[PackageResult]] = {}
        self.failure: BaseException | None = None

    def run(self, batches: Iterator[list[str]]) -> list[PackageResult]:
        threads = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(self.workers)]
        for t in threads:
            t.start()
        try:
            for index, texts in enumerate(batches):
                if self.failure is not None:
                    break
                self.todo.put((index, texts))
        finally:
            for _ in threads:
                self.todo.put(None)
            for t in threads:
                t.join()
        if self.failure is not None:
            raise self.failure
        return [r for index in sorted(self.results) for r in self.results[index]]

    def _work(self, worker: int) -> None:
        # Worker 0 uses the client's own connection; the others borrow pooled ones for this load.
        # A worker always drains the queue to its end, even after a failure, so that the calling
        # thread never blocks on a full queue.
        session = None
        try:
            while (item := self.todo.get()) is not None:
                if self.failure is not None:
                    continue
                index, texts = item
                try:
                    if worker > 0 and session is None:
                        session = _Session(self.client.engine)
                    self.results[index] = self._merge(session, texts)
                except BaseException as exc:  # handed to the calling thread, which re-raises it
                    self.failure = self.failure or exc
        finally:
            if session is not None:
                session.close()

    def _merge(self, session: _Session | None, texts: list[str]) -> list[PackageResult]:
        if session is None:  # the client's own connection, reopened once if it dropped
            return self.client._with_retry(lambda: _merge_batch(self.client._own_session(), texts, self.client._rules))
        return _merge_batch(session, texts, self.client._rules)


def _merge_batch(session: _Session, texts: list[str], rules: str) -> list[PackageResult]:
    """Run one batch through ``ingest_packages`` in one statement, hence one transaction.

    The texts travel as one binary ``text[]`` parameter: unlike COPY into a staging table,
    nothing is TOAST-compressed on the way in only to be decompressed again."""
    for attempt in range(DEADLOCK_RETRIES + 1):
        try:
            rows = _execute(
                session.pg, "ingest.insert_packages", {"docs": texts, "rules": rules}, binary=True
            ).fetchall()
            return [_package_result(r) for r in rows]
        except psycopg.errors.DeadlockDetected:
            if attempt == DEADLOCK_RETRIES:
                raise
    raise AssertionError("unreachable")


def _execute(pg: psycopg.Connection, query: str, params: dict[str, Any], binary: bool = False) -> psycopg.Cursor:
    """Run a named query on a driver connection as a prepared statement; refusals of the
    ingest functions (SQLSTATE 22023 with the field in COLUMN) become ValidationError."""
    try:
        return pg.cursor(row_factory=namedtuple_row).execute(_driver_sql(query), params, prepare=True, binary=binary)
    except psycopg.errors.InvalidParameterValue as exc:
        field = exc.diag.column_name
        if not field:
            raise
        message = exc.diag.message_primary or str(exc)
        raise ValidationError(field, message.removeprefix(f"{field}: ")) from None


_DRIVER_SQL: dict[str, str] = {}


def _driver_sql(query: str) -> str:
    """A named query in psycopg's ``%(name)s`` parameter style (compiled once)."""
    if query not in _DRIVER_SQL:
        _DRIVER_SQL[query] = str(queries.get(query).compile(dialect=psycopg_dialect.dialect()))
    return _DRIVER_SQL[query]


def _package_result(row: Any) -> PackageResult:
    return PackageResult(
        row.package_id,
        bytes(row.data_hash),
        row.is_valid,
        row.completeness_score,
        dict(row.validation_flags),
        row.created,
    )


def _prediction_json(prediction: Prediction | dict) -> str:
    if isinstance(prediction, dict):
        prediction = Prediction(**prediction)
    if not isinstance(prediction, Prediction):
        raise ValidationError("prediction", f"must be a Prediction, got {type(prediction).__name__}")
    return _refuse_nul("prediction", json.dumps(prediction.to_document()))


# JSON can carry U+0000 but PostgreSQL text cannot: refused here, naming the object, instead of the
# server's cast failing with an untranslatable-character error. (An escaped backslash before
# "u0000" is ordinary text, hence the look-behind.)
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _refuse_nul(field: str, text: str) -> str:
    if _NUL.search(text):
        raise ValidationError(field, "contains a NUL character (U+0000), which PostgreSQL cannot store")
    return text


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


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
