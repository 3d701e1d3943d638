"""Integrity verification: recompute every stored checksum and list what is corrupted or missing.

``verify_integrity(engine, session_id=None)`` checks, for one session or the whole database:

* input packages — each payload against its ``data_hash``, decoded through
  ``app.ingest.package.decode_payload`` (with a session: the packages its batches used);
* gradient blobs — each chunk's SHA-256 (recomputed by the server), missing chunks, chunks that
  disagree on ``chunk_count``, steps whose blobs cover fewer (or more) parameters than the step
  row recorded — naming the parameters missing from the session's model — and blobs without a
  step row;
* steps — holes in a session's step numbers;
* checkpoints — each state against its ``content_hash``, that it loads with
  ``torch.load(weights_only=True)``, and that the parameters and optimizer state it holds hash
  to the stored ``params_hash`` / ``optimizer_hash`` (the values replay verification trusts);
  sessions with steps but no start checkpoint.

Nothing is repaired: the report lists each problem with the row it concerns.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import sqlalchemy as sa

from app.db import queries
from app.errors import TrainsrvError
from app.ingest import package as ingest_package
from app.recording import checkpoints, sessions
from app.session_replay import rebuild

log = logging.getLogger(__name__)

PACKAGE_PAGE = 500


@dataclasses.dataclass
class Problem:
    """One corrupted or missing row (``kind`` says which check found it)."""

    kind: str
    table: str
    session_id: int | None = None
    step: int | None = None
    param: str | None = None
    chunk: int | None = None
    row_id: int | None = None
    detail: str = ""

    def describe(self) -> str:
        where = [f"{k} {v}" for k, v in (("session", self.session_id), ("step", self.step), ("param", self.param),
                                          ("chunk", self.chunk), ("id", self.row_id)) if v is not None]
        return f"{self.kind}: {self.table} {', '.join(where)}" + (f": {self.detail}" if self.detail else "")


@dataclasses.dataclass
class IntegrityReport:
    """Rows checked per kind, the problems found, and checks that could not run (``notes``)."""

    session_id: int | None
    checked: dict[str, int]
    problems: list[Problem]
    notes: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"session_id": self.session_id, "ok": self.ok, "checked": self.checked,
                "problems": [dataclasses.asdict(p) for p in self.problems], "notes": self.notes}


def verify_integrity(engine: sa.Engine, session_id: int | None = None, *,
                     heartbeat: Callable[[], None] = lambda: None) -> IntegrityReport:
    """Recompute every checksum of ``session_id`` (None: the whole database); see the module docstring."""
    report = IntegrityReport(session_id, {}, [], [])
    with engine.connect() as conn:
        if session_id is not None:
            sessions.get(conn, session_id)  # a clear error for an unknown id
        params = {"session_id": session_id}
        report.checked.update(conn.execute(queries.get("replay_session.counts"), params).one()._asdict())
        _packages(conn, session_id, report, heartbeat)
        models = _ModelNames(conn, report.notes)
        for check in (_blob_checksums, _missing_chunks, _missing_steps, _no_start_checkpoint):
            report.problems.extend(check(conn, params))
            heartbeat()
        report.problems.extend(_step_coverage(conn, params, models))
        bad = _checkpoint_hashes(conn, params)
        report.problems.extend(bad)
        report.problems.extend(_checkpoint_contents(conn, params, {p.row_id for p in bad}, models, heartbeat))
    log.info("verified %s: %s problem(s)", f"session {session_id}" if session_id else "database",
             len(report.problems))
    return report


# -- packages -----------------------------------------------------------------------------------

def _packages(conn: sa.Connection, session_id: int | None, report: IntegrityReport,
              heartbeat: Callable[[], None]) -> None:
    count = 0
    for rows in _package_pages(conn, session_id):
        for row in rows:
            problem = _package_problem(row)
            if problem is not None:
                report.problems.append(problem)
        count += len(rows)
        heartbeat()
    report.checked["packages"] = count


def _package_pages(conn: sa.Connection, session_id: int | None):
    if session_id is not None:
        ids = list(conn.execute(queries.get("replay_session.session_package_ids"),
                                {"session_id": session_id}).scalars())
        for i in range(0, len(ids), PACKAGE_PAGE):
            yield conn.execute(queries.get("replay_session.package_payloads"),
                               {"ids": ids[i:i + PACKAGE_PAGE]}).all()
        return
    after = 0
    while True:
        rows = conn.execute(queries.get("replay_session.packages_page"), {"after": after, "limit": PACKAGE_PAGE}).all()
        if not rows:
            return
        yield rows
        after = rows[-1].id


def _package_problem(row) -> Problem | None:
    try:
        ingest_package.decode_payload(bytes(row.payload), bytes(row.data_hash), row.id)
    except ingest_package.PackageTampered:
        return Problem("package_hash_mismatch", "input_packages", row_id=row.id,
                       detail="payload does not match its data_hash")
    except (TrainsrvError, ValueError, KeyError, TypeError) as exc:
        return Problem("package_undecodable", "input_packages", row_id=row.id, detail=str(exc)[:200])
    return None


# -- gradient blobs and steps -------------------------------------------------------------------

def _blob_checksums(conn: sa.Connection, params: dict) -> list[Problem]:
    return [Problem("blob_checksum_mismatch", "gradient_blobs", r.session_id, r.step, r.param_name, r.chunk_index,
                    detail="chunk bytes do not match their SHA-256")
            for r in conn.execute(queries.get("replay_session.blob_checksum_failures"), params)]


def _missing_chunks(conn: sa.Connection, params: dict) -> list[Problem]:
    problems = []
    for r in conn.execute(queries.get("replay_session.blob_missing_chunks"), params):
        if r.inconsistent:
            problems.append(Problem("blob_inconsistent_chunks", "gradient_blobs", r.session_id, r.step,
                                    r.param_name, detail="its chunks disagree on chunk_count"))
        else:
            problems.append(Problem("blob_missing_chunk", "gradient_blobs", r.session_id, r.step, r.param_name,
                                    r.chunk_index, detail=f"chunk {r.chunk_index} of {r.chunk_count} is missing"))
    return problems


def _missing_steps(conn: sa.Connection, params: dict) -> list[Problem]:
    return [Problem("missing_step", "training_steps", r.session_id, r.first_missing,
                    detail=f"steps {r.first_missing}..{r.last_missing} are missing"
                    if r.last_missing > r.first_missing else "step row is missing")
            for r in conn.execute(queries.get("replay_session.missing_steps"), params)]


def _no_start_checkpoint(conn: sa.Connection, params: dict) -> list[Problem]:
    return [Problem("missing_checkpoint", "checkpoints", r.session_id, 0,
                    detail="the session has steps but no start checkpoint (step 0)")
            for r in conn.execute(queries.get("replay_session.sessions_without_start"), params)]


def _step_coverage(conn: sa.Connection, params: dict, models: "_ModelNames") -> list[Problem]:
    problems = []
    for r in conn.execute(queries.get("replay_session.step_gradient_counts"), params):
        present = set(r.names)
        if r.orphan:
            problems.append(Problem("orphan_blobs", "gradient_blobs", r.session_id, r.step,
                                    detail=f"gradients of {len(present)} parameter(s) but no step row"))
            continue
        expected = models.names(r.session_id)
        missing = sorted(expected - present) if expected else []
        detail = f"{len(present)} of the {r.gradients_stored} recorded gradients are stored"
        problems.append(Problem("missing_gradient", "gradient_blobs", r.session_id, r.step,
                                missing[0] if len(missing) == 1 else None,
                                detail=detail + (f"; missing: {', '.join(missing[:5])}" if missing else "")))
    return problems


class _ModelNames:
    """The parameter names of each session's model (rebuilt once per session, lazily)."""

    def __init__(self, conn: sa.Connection, notes: list[str]):
        self.conn, self.notes = conn, notes
        self._rows: dict[int, object] = {}
        self._models: dict[int, object] = {}

    def row(self, session_id: int):
        if session_id not in self._rows:
            self._rows[session_id] = sessions.get(self.conn, session_id)
        return self._rows[session_id]

    def model(self, session_id: int):
        """The rebuilt model, or None (noted) when its code or optimizer spec cannot be loaded any more."""
        if session_id not in self._models:
            row = self.row(session_id)
            try:
                rebuild.optimizer_spec(row.config)
                self._models[session_id] = rebuild.build_model(row.model_kind, row.model_name, row.config)
            except Exception as exc:  # noqa: BLE001 - a plug-in model may fail in any way; reported, not fatal
                self.notes.append(f"session {session_id}: model {row.model_name} cannot be rebuilt ({exc}); "
                                  "its parameter names and checkpoint hashes were not checked")
                self._models[session_id] = None
        return self._models[session_id]

    def names(self, session_id: int) -> set[str]:
        model = self.model(session_id)
        return set() if model is None else {n for n, p in model.named_parameters() if p.requires_grad}


# -- checkpoints --------------------------------------------------------------------------------

def _checkpoint_hashes(conn: sa.Connection, params: dict) -> list[Problem]:
    return [Problem("checkpoint_hash_mismatch", "checkpoints", r.session_id, r.step, row_id=r.id,
                    detail="stored state does not match its content_hash")
            for r in conn.execute(queries.get("replay_session.checkpoint_hash_failures"), params)]


def _checkpoint_contents(conn: sa.Connection, params: dict, skip: set[int], models: _ModelNames,
                         heartbeat: Callable[[], None]) -> list[Problem]:
    """Load each intact checkpoint (weights only) and re-hash its parameters and optimizer state."""
    problems = []
    for r in conn.execute(queries.get("replay_session.checkpoint_ids"), params).all():
        if r.id in skip:
            continue
        problem = _checkpoint_problem(conn, r, models)
        if problem is not None:
            problems.append(problem)
        heartbeat()
    return problems


def _checkpoint_problem(conn: sa.Connection, r, models: _ModelNames) -> Problem | None:
    try:
        ckpt = checkpoints.load(conn, r.session_id, r.step, verify=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the state is unusable
        return Problem("checkpoint_unreadable", "checkpoints", r.session_id, r.step, row_id=r.id,
                       detail=f"does not load with weights_only: {str(exc)[:200]}")
    model = models.model(r.session_id)
    if model is None:
        return None
    optimizer = rebuild.optimizer_spec(models.row(r.session_id).config).build(model.parameters())
    try:
        checkpoints.restore(model, optimizer, ckpt.state, rng=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        return Problem("checkpoint_unreadable", "checkpoints", r.session_id, r.step, row_id=r.id,
                       detail=f"does not fit the session's model: {str(exc)[:200]}")
    wrong = [what for what, ok in (("params_hash", checkpoints.params_hash(model) == ckpt.params_hash),
                                   ("optimizer_hash", checkpoints.optimizer_hash(optimizer) == ckpt.optimizer_hash))
             if not ok]
    if wrong:
        return Problem("checkpoint_hash_mismatch", "checkpoints", r.session_id, r.step, row_id=r.id,
                       detail=f"the stored state does not hash to its {' and '.join(wrong)}")
    return None
