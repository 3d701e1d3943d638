"""The background writer's batches: many steps per transaction, slots freed before the commit,
checkpoints ending their batch, and every stored chunk reading back bit for bit."""

import pytest
import sqlalchemy as sa
import torch

from app.recording import stored_steps
from app.recording.capture import CapturePolicy, GradientCapture
from app.recording.session import SessionRecorder, SessionSpec
from app.recording.writer import BackgroundWriter, CheckpointRecord, StepRecord


class _Model(torch.nn.Module):
    """A weight cut into several chunks, a bias in one, and a 0-d parameter (shape [])."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(300, 7)
        self.scale = torch.nn.Parameter(torch.tensor(1.5))

    def forward(self, x):
        return self.linear(x) * self.scale


@pytest.fixture
def session_id(engine):
    rec = SessionRecorder.start(engine, SessionSpec("cnn", "writer-test", {}, 0, "cpu"))
    rec.writer.close()
    yield rec.session_id
    rec.close()


def _backward(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    (model(torch.randn(5, 300)) ** 2).mean().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def _step(step: int, captured) -> StepRecord:
    return StepRecord(
        step, 0.5, {"classification": 0.5}, 1.0, 1e-3, [step, step + 1], {"mean_score": 0.7}, {"total": 1.0}, captured
    )


def test_one_transaction_holds_many_steps_and_frees_each_slot_once_streamed(engine, session_id):
    model = _Model()
    cap = GradientCapture(model.named_parameters(), CapturePolicy(), slots=1)
    # A batch may stay open far longer than this test: only flush() ends it.
    writer = BackgroundWriter(engine, session_id, max_batch=50, max_batch_s=600, chunk_bytes=4096)
    expected = {}
    for step in range(1, 6):
        expected[step] = _backward(model, step)
        # With one slot, this capture waits for the writer to stream the previous step: it would
        # time out if slots were held until the commit, since the batch is still open.
        writer.submit(_step(step, cap.capture(step, timeout_s=30)))
    writer.flush()
    assert writer.stats.transactions == 1 and writer.stats.records == 5
    assert writer.stats.chunks == 5 * (3 + 1 + 1)  # 2100 floats in 4096-byte chunks, bias, scale
    writer.close()

    stored = list(stored_steps.read_steps(engine, session_id, 1, 5))
    assert [s.step for s in stored] == [1, 2, 3, 4, 5]
    for s in stored:
        assert s.batch_ids == [s.step, s.step + 1] and s.loss_components == {"classification": 0.5}
        assert s.gradients_stored == 3 and s.gradients.keys() == expected[s.step].keys()
        for name, grad in expected[s.step].items():
            assert s.gradients[name].shape == grad.shape and torch.equal(s.gradients[name], grad)


def test_a_checkpoint_ends_its_batch_and_follows_its_steps(engine, session_id):
    model = _Model()
    cap = GradientCapture(model.named_parameters(), CapturePolicy(), slots=4)
    writer = BackgroundWriter(engine, session_id, max_batch=50, max_batch_s=600)
    seen_by_hook = []

    def on_commit(conn: sa.Connection) -> None:
        seen_by_hook.append(
            conn.execute(
                sa.text("SELECT count(*) FROM training_steps WHERE session_id = :s"), {"s": session_id}
            ).scalar()
        )

    for step in (1, 2):
        _backward(model, step)
        writer.submit(_step(step, cap.capture(step)))
    writer.submit(CheckpointRecord(2, "periodic", b"p" * 32, b"o" * 32, b"c" * 32, b"state", on_commit))
    _backward(model, 3)
    writer.submit(_step(3, cap.capture(3)))
    writer.close()

    assert seen_by_hook == [2]  # the hook ran in the checkpoint's transaction, after steps 1-2
    assert writer.stats.transactions == 2 and writer.stats.records == 4
    with engine.connect() as conn:
        steps = conn.execute(
            sa.text("SELECT step, gradients_stored FROM training_steps WHERE session_id = :s ORDER BY step"),
            {"s": session_id},
        ).all()
        ckpt = conn.execute(
            sa.text("SELECT step, byte_length FROM checkpoints WHERE session_id = :s"), {"s": session_id}
        ).one()
    assert [tuple(r) for r in steps] == [(1, 3), (2, 3), (3, 3)]
    assert tuple(ckpt) == (2, 5)
