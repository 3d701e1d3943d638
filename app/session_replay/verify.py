"""Integrity verification: recompute every stored checksum and list what is corrupted or missing.

``verify_integrity(engine, session_id=None)`` checks, for one session or the whole database:

* input packages — each payload against its ``data_hash``, decoded through
  ``app.ingest.package.decode_payload`` (with a session: the packages its batches used);
* gradient blobs — each chunk's SHA-256 (recomputed by the server), missing chunks, chunks that
  disagree on ``chunk_count``, steps whose blobs cover fewer (or more) parameters than the step
  row recorded — naming the parameters missing from the session's model — and blobs without a
  step row;
* steps — holes in a session's step numbers;
* blob layouts — each gradient's codec, dtype, shape and byte length, against each other and the
  session's model (what replay decodes with);
* completeness — a succeeded session holds steps 1..N of its ``metrics.steps`` and every checkpoint
  it wrote (``app.session_replay.completeness``);
* checkpoints — each state against its ``content_hash``, that it loads with
  ``torch.load(weights_only=True)``, and that the parameters and optimizer state it holds hash
  to the stored ``params_hash`` / ``optimizer_hash`` (the values replay verification trusts);
  sessions with steps but no start checkpoint.

Nothing is repaired: the report lists each problem with the row it concerns.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import sqlalchemy as sa

from app.db import queries
from app.errors import ValidationError
from app.ingest import package as ingest_package
from app.recording import blobs, checkpoints, sessions
from app.session_replay import completeness, rebuild

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
        where = [
            f"{k} {v}"
            for k, v in (
                ("session", self.session_id),
                ("step", self.step),
                ("param", self.param),
                ("chunk", self.chunk),
                ("id", self.row_id),
            )
            if v is not None
        ]
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
        return {
            "session_id": self.session_id,
            "ok": self.ok,
            "checked": self.checked,
            "problems": [dataclasses.asdict(p) for p in self.problems],
            "notes": self.notes,
        }


def verify_integrity(
    engine: sa.Engine, session_id: int | None = None, *, heartbeat: Callable[[], None] = lambda: None
) -> IntegrityReport:
    """Recompute every checksum of ``session_id`` (None: the whole database); see the module docstring."""
    report = IntegrityReport(session_id, {}, [], [])
    with engine.connect() as conn:
        if session_id is not None:
            sessions.get(conn, session_id)  # a clear error for an unknown id
        params = {"session_id": session_id}
        report.checked.update(conn.execute(queries.get("replay_session.counts"), params).one()._asdict())
        _packages(conn, session_id, report, heartbeat)
        models = _ModelNames(conn, report.notes, report.problems)
        for check in (_blob_checksums, _missing_chunks, _missing_steps, _no_start_checkpoint, session_completeness):
            report.problems.extend(check(conn, params))
            heartbeat()
        report.problems.extend(_step_coverage(conn, params, models))
        report.problems.extend(_blob_layouts(conn, params, models))
        bad = _checkpoint_hashes(conn, params)
        report.problems.extend(bad)
        report.problems.extend(_checkpoint_contents(conn, params, {p.row_id for p in bad}, models, heartbeat))
        report.problems[:] = _unique(report.problems)
        separate_pruned_from_missing(conn, params, report)
    log.info("verified %s: %s problem(s)", f"session {session_id}" if session_id else "database", len(report.problems))
    return report


# -- packages -----------------------------------------------------------------------------------


def _packages(
    conn: sa.Connection, session_id: int | None, report: IntegrityReport, heartbeat: Callable[[], None]
) -> None:
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
        ids = list(
            conn.execute(queries.get("replay_session.session_package_ids"), {"session_id": session_id}).scalars()
        )
        for i in range(0, len(ids), PACKAGE_PAGE):
            yield conn.execute(queries.get("replay_session.package_payloads"), {"ids": ids[i : i + PACKAGE_PAGE]}).all()
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
        return Problem(
            "package_hash_mismatch", "input_packages", row_id=row.id, detail="payload does not match its data_hash"
        )
    except Exception as exc:  # noqa: BLE001 - whatever one stored package does, the others are still checked
        return Problem("package_undecodable", "input_packages", row_id=row.id, detail=str(exc)[:200])
    return None


# -- gradient blobs and steps -------------------------------------------------------------------


def _blob_checksums(conn: sa.Connection, params: dict) -> list[Problem]:
    return [
        Problem(
            "blob_checksum_mismatch",
            "gradient_blobs",
            r.session_id,
            r.step,
            r.param_name,
            r.chunk_index,
            detail="chunk bytes do not match their SHA-256",
        )
        for r in conn.execute(queries.get("replay_session.blob_checksum_failures"), params)
    ]


def _missing_chunks(conn: sa.Connection, params: dict) -> list[Problem]:
    problems = []
    for r in conn.execute(queries.get("replay_session.blob_missing_chunks"), params):
        if r.inconsistent:
            problems.append(
                Problem(
                    "blob_inconsistent_chunks",
                    "gradient_blobs",
                    r.session_id,
                    r.step,
                    r.param_name,
                    detail="its chunks disagree on chunk_count",
                )
            )
        else:
            problems.append(
                Problem(
                    "blob_missing_chunk",
                    "gradient_blobs",
                    r.session_id,
                    r.step,
                    r.param_name,
                    r.chunk_index,
                    detail=f"chunk {r.chunk_index} of {r.chunk_count} is missing",
                )
            )
    return problems


def _missing_steps(conn: sa.Connection, params: dict) -> list[Problem]:
    return [
        Problem(
            "missing_step",
            "training_steps",
            r.session_id,
            r.first_missing,
            detail=f"steps {r.first_missing}..{r.last_missing} are missing"
            if r.last_missing > r.first_missing
            else "step row is missing",
        )
        for r in conn.execute(queries.get("replay_session.missing_steps"), params)
    ]


def _no_start_checkpoint(conn: sa.Connection, params: dict) -> list[Problem]:
    return [
        Problem(
            "missing_checkpoint",
            "checkpoints",
            r.session_id,
            0,
            detail="the session has steps but no start checkpoint (step 0)",
        )
        for r in conn.execute(queries.get("replay_session.sessions_without_start"), params)
    ]


def session_completeness(conn: sa.Connection, params: dict) -> list[Problem]:
    """Succeeded sessions must hold every step their metrics recorded (1..N, no holes) and every
    checkpoint they wrote (start, every ``checkpoint_every`` steps, final): a deleted tail or start is
    reported, not taken for a shorter session."""
    problems = []
    for r in conn.execute(queries.get("session_integrity.session_extents"), params):
        for kind, step, detail in completeness.gaps(
            r.status, r.metrics, r.config, r.steps_stored, r.last_step, list(r.checkpoint_steps)
        ):
            table = "checkpoints" if kind == "missing_checkpoint" else "training_steps"
            problems.append(Problem(kind, table, r.session_id, step, detail=detail))
    return problems


def _unique(problems: list[Problem]) -> list[Problem]:
    """One problem per kind and row (the start checkpoint can be found missing by two checks)."""
    seen, kept = set(), []
    for p in problems:
        key = (p.kind, p.table, p.session_id, p.step, p.param, p.chunk, p.row_id)
        if key not in seen:
            seen.add(key)
            kept.append(p)
    return kept


def _step_coverage(conn: sa.Connection, params: dict, models: _ModelNames) -> list[Problem]:
    problems = []
    for r in conn.execute(queries.get("replay_session.step_gradient_counts"), params):
        present = set(r.names)
        if r.orphan:
            problems.append(
                Problem(
                    "orphan_blobs",
                    "gradient_blobs",
                    r.session_id,
                    r.step,
                    detail=f"gradients of {len(present)} parameter(s) but no step row",
                )
            )
            continue
        expected = models.names(r.session_id)
        missing = sorted(expected - present) if expected else []
        detail = f"{len(present)} of the {r.gradients_stored} recorded gradients are stored"
        problems.append(
            Problem(
                "missing_gradient",
                "gradient_blobs",
                r.session_id,
                r.step,
                missing[0] if len(missing) == 1 else None,
                detail=detail + (f"; missing: {', '.join(missing[:5])}" if missing else ""),
            )
        )
    return problems


def _blob_layouts(conn: sa.Connection, params: dict, models: _ModelNames) -> list[Problem]:
    """What replay relies on besides the checksums: each stored gradient's codec, dtype, shape and byte
    length agree with each other and with the session's model (a blob truncated together with its
    length and checksum, or relabelled, passes the checksum check but not this one)."""
    problems = []
    for r in conn.execute(queries.get("session_integrity.blob_layouts"), params):
        detail = _layout_problem(r, models.parameters(r.session_id))
        if detail is not None:
            kind, text = detail
            problems.append(
                Problem(
                    kind,
                    "gradient_blobs",
                    r.session_id,
                    r.first_step,
                    r.param_name,
                    detail=f"{text} ({r.steps} step(s) from step {r.first_step})",
                )
            )
    return problems


def _layout_problem(r, params: dict | None) -> tuple[str, str] | None:
    if r.codec not in blobs.CODECS:
        return "blob_bad_codec", f"unknown codec {r.codec!r} (known: {', '.join(blobs.CODECS)})"
    try:
        dtype = blobs.parse_dtype(r.dtype)
    except blobs.BlobError as exc:
        return "blob_bad_dtype", str(exc)
    if params is not None:
        param = params.get(r.param_name)
        if param is None:
            return "blob_unknown_param", "the session's model has no parameter of this name"
        if dtype != param.dtype:
            return "blob_bad_dtype", f"stored as {r.dtype}, the parameter is {blobs.dtype_name(param.dtype)}"
        if list(r.shape) != list(param.shape):
            return "blob_bad_shape", f"stored shape {list(r.shape)}, the parameter's is {list(param.shape)}"
    numel = 1
    for d in r.shape:
        numel *= d
    expected = numel * blobs.codec_dtype(r.codec, dtype).itemsize
    if r.bytes != expected:
        return "blob_bad_length", f"{r.bytes} bytes stored, shape {list(r.shape)} as {r.codec} needs {expected}"
    return None


class _ModelNames:
    """The parameter names of each session's model (rebuilt once per session, lazily)."""

    def __init__(self, conn: sa.Connection, notes: list[str], problems: list[Problem]):
        self.conn, self.notes, self.problems = conn, notes, problems
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
            except ValidationError as exc:
                if not exc.field.startswith("config"):  # e.g. a plug-in model not installed here: a note
                    self._unbuildable(session_id, row, exc)
                    return None
                # The stored config itself is wrong: replay refuses it too.
                self.problems.append(
                    Problem(
                        "session_config_invalid",
                        "training_sessions",
                        session_id,
                        detail=f"model {row.model_name} cannot be rebuilt: {exc}",
                    )
                )
                self._models[session_id] = None
            except Exception as exc:  # noqa: BLE001 - a plug-in model may fail in any way; reported, not fatal
                self._unbuildable(session_id, row, exc)
        return self._models[session_id]

    def _unbuildable(self, session_id: int, row, exc: BaseException) -> None:
        self.notes.append(
            f"session {session_id}: model {row.model_name} cannot be rebuilt ({exc}); "
            "its parameter names and checkpoint hashes were not checked"
        )
        self._models[session_id] = None

    def names(self, session_id: int) -> set[str]:
        model = self.model(session_id)
        return set() if model is None else {n for n, p in model.named_parameters() if p.requires_grad}

    def parameters(self, session_id: int) -> dict | None:
        model = self.model(session_id)
        return None if model is None else dict(model.named_parameters())


# -- pruned by retention, not missing ----------------------------------------------------------------

# What retention removes, by ``training_sessions.pruned``: absent rows of these kinds are pruned, not lost.
PRUNED_KINDS = {"gradients": {"missing_gradient"}, "all": {"missing_gradient", "missing_checkpoint"}}


def separate_pruned_from_missing(conn: sa.Connection, params: dict, report: IntegrityReport) -> None:
    """Move the absences retention caused out of ``report.problems`` into one note per pruned session.

    A session that ``trainsrv gc`` pruned has no gradients (and with ``all`` no checkpoints) on purpose;
    the same absence in a session not marked pruned stays a problem (missing). Corruption of what is left
    (checksums, hashes) is never excused.
    """
    pruned = {r.session_id: r for r in conn.execute(queries.get("retention.pruned_sessions"), params)}
    report.checked["pruned_sessions"] = len(pruned)
    if not pruned:
        return
    kept, excused = [], {}
    for p in report.problems:
        row = pruned.get(p.session_id)
        if row is not None and p.kind in PRUNED_KINDS[row.pruned]:
            excused[p.session_id] = excused.get(p.session_id, 0) + 1
        else:
            kept.append(p)
    report.problems[:] = kept
    for sid, row in pruned.items():
        what = "gradients" if row.pruned == "gradients" else "gradients and checkpoints"
        when = row.pruned_at.isoformat(timespec="minutes")
        report.notes.append(
            f"session {sid}: {what} pruned by retention at {when} ({row.pruned_reason}); "
            f"{excused.get(sid, 0)} absent row(s) are pruned, not missing"
        )


# -- checkpoints --------------------------------------------------------------------------------


def _checkpoint_hashes(conn: sa.Connection, params: dict) -> list[Problem]:
    return [
        Problem(
            "checkpoint_hash_mismatch",
            "checkpoints",
            r.session_id,
            r.step,
            row_id=r.id,
            detail="stored state does not match its content_hash",
        )
        for r in conn.execute(queries.get("replay_session.checkpoint_hash_failures"), params)
    ]


def _checkpoint_contents(
    conn: sa.Connection, params: dict, skip: set[int], models: _ModelNames, heartbeat: Callable[[], None]
) -> list[Problem]:
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
        return Problem(
            "checkpoint_unreadable",
            "checkpoints",
            r.session_id,
            r.step,
            row_id=r.id,
            detail=f"does not load with weights_only: {str(exc)[:200]}",
        )
    model = models.model(r.session_id)
    if model is None:
        return None
    optimizer = rebuild.optimizer_spec(models.row(r.session_id).config).build(model.parameters())
    try:
        checkpoints.restore(model, optimizer, ckpt.state, rng=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        return Problem(
            "checkpoint_unreadable",
            "checkpoints",
            r.session_id,
            r.step,
            row_id=r.id,
            detail=f"does not fit the session's model: {str(exc)[:200]}",
        )
    wrong = [
        what
        for what, ok in (
            ("params_hash", checkpoints.params_hash(model) == ckpt.params_hash),
            ("optimizer_hash", checkpoints.optimizer_hash(optimizer) == ckpt.optimizer_hash),
        )
        if not ok
    ]
    if wrong:
        return Problem(
            "checkpoint_hash_mismatch",
            "checkpoints",
            r.session_id,
            r.step,
            row_id=r.id,
            detail=f"the stored state does not hash to its {' and '.join(wrong)}",
        )
    return None
