"""Exact gradient replay of a recorded session, verified against its checkpoints bit for bit.

``replay_session`` rebuilds the session's model and optimizer (``app.session_replay.rebuild``),
restores the nearest checkpoint at or before ``from_step`` and then, for every later step up to
``to_step``, loads the stored gradients into ``param.grad``, sets the step's learning rate from
the session's schedule and calls ``optimizer.step()`` — the last stage of
``app.recording.step.train_step``, with no forward or backward pass. At every checkpoint it
passes, the parameters' and the optimizer's hashes are compared with the stored ones.

Exact sessions (``replay_exact``: ``full`` capture) must reproduce every checkpoint bit for bit
on the device and torch version they were recorded with; the first checkpoint that differs is
reported with the last one that matched (the divergence happened in between), the parameters
that differ, and — when the learning-rate schedule disagrees with the stored one — the exact
step. Lossy sessions (``every_k``, ``half``, ``none``) refuse verification; with
``approximate`` they are replayed anyway (steps without stored gradients are skipped) and each
checkpoint is compared by distance instead of hash.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable

import sqlalchemy as sa
import torch

from app.config import get_settings
from app.db import models
from app.errors import TrainsrvError, ValidationError
from app.recording import checkpoints, sessions, stored_steps
from app.recording.hooks import resolve_device
from app.retention import locks as retention_locks
from app.session_replay import completeness, rebuild
from app.session_replay.options import ReplayOptions

log = logging.getLogger(__name__)


class NotReplayExact(TrainsrvError):
    """The session's gradients were captured lossily: it cannot be verified bit for bit."""


class GradientsPruned(NotReplayExact):
    """Retention removed the session's gradients (``training_sessions.pruned``): nothing to replay."""


class ReplayError(TrainsrvError):
    """The stored session is incomplete or does not fit the model it names."""


@dataclasses.dataclass
class CheckpointCheck:
    """One stored checkpoint compared with the replayed state."""

    step: int
    params_match: bool
    optimizer_match: bool
    max_abs_diff: float | None = None
    params_differing: list[str] = dataclasses.field(default_factory=list)

    @property
    def matches(self) -> bool:
        return self.params_match and self.optimizer_match


@dataclasses.dataclass
class Divergence:
    """Where a replay first stopped reproducing the recorded session."""

    step: int
    last_matching_step: int
    reason: str
    params_differing: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ReplayReport:
    """What a replay did and found (``exact`` is None for approximate replays)."""

    session_id: int
    start_checkpoint: int
    to_step: int
    steps_applied: int
    steps_skipped: int
    checks: list[CheckpointCheck]
    divergence: Divergence | None
    exact: bool | None
    final_params_hash: str
    final_optimizer_hash: str
    elapsed_s: float
    notes: list[str]
    # What of the recorded session this replay did not cover (from step 0, every step it recorded and
    # every checkpoint it wrote); empty when the whole session was replayed.
    incomplete: list[str] = dataclasses.field(default_factory=list)

    @property
    def verified_whole(self) -> bool:
        """Bit-exact from step 0 through every recorded step and checkpoint (what ``--verify`` requires)."""
        return bool(self.exact) and not self.incomplete

    @property
    def steps_per_s(self) -> float:
        return self.steps_applied / self.elapsed_s if self.elapsed_s > 0 else float("inf")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["steps_per_s"] = round(self.steps_per_s, 2)
        data["checkpoints_matched"] = sum(c.matches for c in self.checks)
        data["verified_whole"] = self.verified_whole
        return data


@dataclasses.dataclass
class _State:
    """The model and optimizer being replayed, and how to set a step's learning rate."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_at: Callable[[int], float]
    params: dict[str, torch.nn.Parameter]


def replay_session(
    engine: sa.Engine,
    session_id: int,
    options: ReplayOptions | None = None,
    on_step: Callable[[int], bool] | None = None,
) -> ReplayReport:
    """Replay ``session_id`` from its stored gradients (see the module docstring).

    ``on_step(step)`` is called after every applied step; returning False stops the replay there.
    Raises NotReplayExact (GradientsPruned when retention removed its gradients), ReplayError, CorruptedBlob
    (naming the blob) or CheckpointError. Holds the replay lock on the session throughout, so retention
    (``trainsrv gc``) never prunes what it reads.
    """
    opts = options or ReplayOptions()
    resolve_device(opts.device)
    with retention_locks.reading(engine, session_id):
        return _replay_locked(engine, session_id, opts, on_step)


def _replay_locked(
    engine: sa.Engine, session_id: int, opts: ReplayOptions, on_step: Callable[[int], bool] | None
) -> ReplayReport:
    started = time.perf_counter()
    with engine.connect() as conn:
        row = sessions.get(conn, session_id)
        check_replayable(row, opts)
        start, to_step, targets = _plan(conn, row, opts)
        ckpt = checkpoints.load(conn, session_id, start)
        last_stored = _last_stored_step(conn, session_id)
    state = restore_state(row, ckpt, opts.device)
    notes = _notes(row, opts)
    run = _Replay(engine, row, state, targets, notes)
    with torch_threads(opts.threads):
        run.apply(start + 1, to_step, on_step or (lambda step: True))
    report = run.report(start, time.perf_counter() - started)
    report.incomplete = uncovered(row, report, [start, *targets], last_stored)
    return report


def _last_stored_step(conn: sa.Connection, session_id: int) -> int:
    return (
        conn.execute(
            sa.select(sa.func.max(models.TrainingStep.step)).where(models.TrainingStep.session_id == session_id)
        ).scalar()
        or 0
    )


def uncovered(row, report: ReplayReport, compared: list[int], last_stored: int) -> list[str]:
    """What of the recorded session a replay did not reproduce: its start, its tail, its checkpoints."""
    missing = []
    if report.start_checkpoint != 0:
        missing.append(f"started at the checkpoint of step {report.start_checkpoint}, not at step 0")
    total = completeness.recorded_steps(row.status, row.metrics)
    end = last_stored if total is None else total
    if report.to_step < end:
        why = "recorded" if total is not None else "stored"
        missing.append(f"stopped at step {report.to_step} of the {end} steps the session {why}")
    checked = {c.step for c in report.checks} | {report.start_checkpoint}
    absent = [
        s
        for s in completeness.expected_checkpoints(row.config, end)
        if s not in checked and s not in compared and report.start_checkpoint <= s <= report.to_step
    ]
    if absent:
        missing.append(f"no stored checkpoint to compare at step(s) {_brief(absent)}")
    return missing


@contextlib.contextmanager
def torch_threads(count: int | None = None):
    """Run the block with ``count`` torch intra-op threads (None: settings.replay_threads; 0: unchanged).

    Optimizer updates are elementwise, so the thread count changes their speed, not their bits
    (see docs/session_replay.md); small parameter tensors update fastest on one thread.
    """
    count = get_settings().replay_threads if count is None else count
    previous = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_replayable(row, opts: ReplayOptions) -> None:
    """Pruned sessions refuse replay; lossy ones refuse verification, and replay unless ``approximate``."""
    if row.pruned is not None:
        raise GradientsPruned(pruned_reason(row))
    if row.replay_exact:
        return
    why = lossy_reason(row)
    if opts.verify:
        raise NotReplayExact(
            f"session {row.id} cannot be verified: {why}. Its checkpoints can only be "
            "approached, not reproduced bit for bit; replay it with --approximate instead"
        )
    if not opts.approximate:
        raise NotReplayExact(
            f"session {row.id} is not replay-exact: {why}; pass --approximate to replay it "
            "anyway (checkpoints are then compared by distance, not hash)"
        )


def pruned_reason(row) -> str:
    """One line: the session cannot be replayed because retention removed its gradients (and when, why)."""
    what = "gradients" if row.pruned == "gradients" else "gradients and checkpoints"
    left = "; its checkpoints remain" if row.pruned == "gradients" else ""
    return (
        f"session {row.id} cannot be replayed: its {what} were pruned by retention at "
        f"{row.pruned_at.isoformat(timespec='minutes')} ({row.pruned_reason}){left}"
    )


def lossy_reason(row) -> str:
    """Why a session's capture policy loses information, in words."""
    capture = (row.config or {}).get("capture", {})
    if row.capture_policy == "half":
        return f"its gradients were stored rounded to {capture.get('half_codec', 'half precision')}"
    if row.capture_policy == "every_k":
        return f"gradients were stored only every {capture.get('k', 'k')}-th step (capture policy every_k)"
    if row.capture_policy == "none":
        return "no gradients were stored (capture policy none)"
    return f"capture policy {row.capture_policy!r} is not lossless"


def _plan(conn: sa.Connection, row, opts: ReplayOptions) -> tuple[int, int, list[int]]:
    """Start checkpoint, last step, and the checkpoints to compare on the way."""
    ckpt_steps = checkpoints.list_steps(conn, row.id)
    if not ckpt_steps:
        raise ReplayError(f"session {row.id} has no checkpoint to start a replay from")
    last = (
        conn.execute(
            sa.select(sa.func.max(models.TrainingStep.step)).where(models.TrainingStep.session_id == row.id)
        ).scalar()
        or 0
    )
    from_step = ckpt_steps[0] if opts.from_step is None else opts.from_step
    before = [s for s in ckpt_steps if s <= from_step]
    if from_step < 0 or not before:
        raise ValidationError(
            "from_step",
            f"session {row.id} has no checkpoint at or before step {from_step} (checkpoints at {_brief(ckpt_steps)})",
        )
    to_step = last if opts.to_step is None else opts.to_step
    if not before[-1] <= to_step <= last:
        raise ValidationError(
            "to_step",
            f"must be between {before[-1]} (the start checkpoint) and {last} "
            f"(the session's last stored step), got {to_step}",
        )
    return before[-1], to_step, [s for s in ckpt_steps if before[-1] < s <= to_step]


def _brief(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if len(steps) <= 8 else f"{steps[0]}, {steps[1]}, ..., {steps[-1]}"


def restore_state(row, ckpt: checkpoints.StoredCheckpoint, device: str = "cpu") -> _State:
    """Model and optimizer of session ``row`` as they were at ``ckpt`` (hash-checked)."""
    model = rebuild.build_model(row.model_kind, row.model_name, row.config).to(device)
    optimizer = rebuild.optimizer_spec(row.config).build(model.parameters())
    try:
        checkpoints.restore(model, optimizer, ckpt.state, rng=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ReplayError(
            f"checkpoint at step {ckpt.step} of session {row.id} does not fit the model {row.model_name}: {exc}"
        ) from exc
    if checkpoints.params_hash(model) != ckpt.params_hash:
        raise ReplayError(
            f"the rebuilt {row.model_name} does not reproduce the params hash of session {row.id}'s "
            f"checkpoint at step {ckpt.step}: the model code changed since it was recorded"
        )
    return _State(model, optimizer, rebuild.lr_schedule(row.config), dict(model.named_parameters()))


def _notes(row, opts: ReplayOptions) -> list[str]:
    notes = []
    if row.torch_version != torch.__version__:
        notes.append(
            f"recorded with torch {row.torch_version}, replayed with {torch.__version__}: "
            "bit-exactness is only promised for the same version"
        )
    if torch.device(row.device).type != torch.device(opts.device).type:
        notes.append(
            f"recorded on {row.device}, replayed on {opts.device}: optimizer arithmetic may round "
            "differently across devices"
        )
    return notes


class _Replay:
    """The step loop and the checkpoint comparisons of one replay."""

    def __init__(self, engine: sa.Engine, row, state: _State, targets: list[int], notes: list[str]):
        self.engine, self.row, self.state, self.notes = engine, row, state, notes
        self.targets = targets
        self.exact = bool(row.replay_exact)
        self.checks: list[CheckpointCheck] = []
        self.divergence: Divergence | None = None
        self.applied = self.skipped = 0
        self.last_step = self.last_good = 0

    def apply(self, first: int, last: int, on_step: Callable[[int], bool]) -> None:
        self.last_step = self.last_good = first - 1
        targets = iter(self.targets)
        due = next(targets, None)
        for stored in stored_steps.read_steps(self.engine, self.row.id, first, last):
            self._expect_step(stored.step)
            self._step(stored)
            self.last_step = stored.step
            if stored.step == due:
                if not self._compare(stored.step):
                    return
                due = next(targets, None)
            if self.divergence is not None or not on_step(stored.step):
                return
        if self.last_step < last:
            self._missing(self.last_step + 1, last)

    def _expect_step(self, step: int) -> None:
        if step != self.last_step + 1:
            self._missing(self.last_step + 1, step - 1)

    def _missing(self, lo: int, hi: int) -> None:
        where = f"step {lo}" if lo == hi else f"steps {lo}..{hi}"
        raise ReplayError(
            f"session {self.row.id}: {where} missing from training_steps; see `trainsrv verify --session {self.row.id}`"
        )

    def _step(self, stored: stored_steps.StoredStep) -> None:
        lr = self.state.lr_at(stored.step)
        if self.exact and lr != stored.learning_rate and self.divergence is None:
            self.divergence = Divergence(
                stored.step,
                self.last_good,
                f"learning rate {lr!r} from the schedule differs from the recorded {stored.learning_rate!r}",
            )
        for group in self.state.optimizer.param_groups:
            group["lr"] = lr  # set on skipped steps too: training did, and the optimizer hash includes it
        if not stored.gradients:
            if self.exact and stored.gradients_stored:
                self._fewer(stored)
            self.skipped += 1  # no gradient stored (lossy capture, or none was computed): no update
            return
        self._check_names(stored)
        for name, param in self.state.params.items():
            grad = stored.gradients.get(name)
            param.grad = None if grad is None else grad.to(param.device)
        self.state.optimizer.step()
        self.applied += 1

    def _check_names(self, stored: stored_steps.StoredStep) -> None:
        unknown = sorted(set(stored.gradients) - set(self.state.params))
        if unknown:
            raise ReplayError(
                f"session {self.row.id}, step {stored.step}: stored gradient for {unknown[0]!r}, "
                f"which {self.row.model_name} does not have"
            )
        if self.exact and len(stored.gradients) != stored.gradients_stored:
            self._fewer(stored)
        for name, grad in stored.gradients.items():
            param = self.state.params[name]
            if grad.shape != param.shape or grad.dtype != param.dtype:
                raise ReplayError(
                    f"session {self.row.id}, step {stored.step}: the stored gradient of {name!r} is "
                    f"{grad.dtype} {list(grad.shape)}, the parameter is {param.dtype} "
                    f"{list(param.shape)}; see `trainsrv verify --session {self.row.id}`"
                )

    def _fewer(self, stored: stored_steps.StoredStep) -> None:
        missing = sorted(set(self.state.params) - set(stored.gradients))
        raise ReplayError(
            f"session {self.row.id}, step {stored.step}: {len(stored.gradients)} of "
            f"{stored.gradients_stored} recorded gradients are stored (missing e.g. "
            f"{missing[:3]}); see `trainsrv verify --session {self.row.id}`"
        )

    def _compare(self, step: int) -> bool:
        with self.engine.connect() as conn:
            stored = conn.execute(
                sa.select(models.Checkpoint.params_hash, models.Checkpoint.optimizer_hash).where(
                    models.Checkpoint.session_id == self.row.id, models.Checkpoint.step == step
                )
            ).one()
            check = CheckpointCheck(
                step,
                checkpoints.params_hash(self.state.model) == bytes(stored.params_hash),
                checkpoints.optimizer_hash(self.state.optimizer) == bytes(stored.optimizer_hash),
            )
            if not self.exact or not check.params_match:
                self._distance(conn, check)
        self.checks.append(check)
        if check.matches:
            self.last_good = step
            return True
        if self.exact and self.divergence is None:
            what = " and ".join(
                w
                for w, ok in (("parameters", check.params_match), ("optimizer state", check.optimizer_match))
                if not ok
            )
            self.divergence = Divergence(
                step, self.last_good, f"{what} differ from the checkpoint at step {step}", check.params_differing
            )
        return not self.exact

    def _distance(self, conn: sa.Connection, check: CheckpointCheck) -> None:
        """Which parameters differ from the stored checkpoint, and by how much at most."""
        stored = checkpoints.load(conn, self.row.id, check.step).state["model"]
        worst = 0.0
        for name, param in self.state.params.items():
            ref = stored[name].to(param.device)
            if not torch.equal(param.detach(), ref):
                check.params_differing.append(name)
                worst = max(worst, float((param.detach().double() - ref.double()).abs().max()))
        check.max_abs_diff = worst

    def report(self, start: int, elapsed_s: float) -> ReplayReport:
        exact = None if not self.exact else self.divergence is None
        return ReplayReport(
            self.row.id,
            start,
            self.last_step,
            self.applied,
            self.skipped,
            self.checks,
            self.divergence,
            exact,
            checkpoints.params_hash(self.state.model).hex(),
            checkpoints.optimizer_hash(self.state.optimizer).hex(),
            elapsed_s,
            self.notes,
        )
