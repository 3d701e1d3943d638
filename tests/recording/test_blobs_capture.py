"""Gradient codec, capture slots and the background writer's failure and back-pressure paths."""

import queue

import pytest
import sqlalchemy as sa
import torch

from app.errors import ValidationError
from app.recording import blobs
from app.recording.capture import CapturePolicy, GradientCapture
from app.recording.writer import BackgroundWriter, StepRecord, WriterError


def test_raw_round_trip_is_bit_exact_across_chunks():
    t = torch.randn(1000, 37, dtype=torch.float32)
    chunks = blobs.encode("w", t, "raw", chunk_bytes=4096)
    assert len(chunks) == -(-t.numel() * 4 // 4096)
    assert all(len(c.data) <= 4096 for c in chunks)
    back = blobs.decode(list(reversed(chunks)))
    assert back.dtype == torch.float32 and torch.equal(back, t)


@pytest.mark.parametrize("codec, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_codecs_are_lossy_but_close_and_keep_the_original_dtype(codec, dtype):
    t = torch.randn(64, 8)
    chunks = blobs.encode("w", t, codec)
    assert sum(len(c.data) for c in chunks) == t.numel() * 2
    back = blobs.decode(chunks)
    assert back.dtype == torch.float32
    assert torch.equal(back, t.to(dtype).to(torch.float32))


def test_corrupted_or_missing_chunk_is_named():
    chunks = blobs.encode("layer.weight", torch.randn(300), chunk_bytes=256)
    bad = list(chunks)
    bad[2] = blobs.Chunk(**{**bad[2].__dict__, "data": b"\x00" + bad[2].data[1:]})
    with pytest.raises(blobs.BlobError, match=r"layer.weight: chunk 2 checksum"):
        blobs.decode(bad)
    with pytest.raises(blobs.BlobError, match="layer.weight: chunks"):
        blobs.decode(chunks[:1] + chunks[2:])


def test_policies():
    assert CapturePolicy().replay_exact and CapturePolicy().codec == "raw"
    every = CapturePolicy("every_k", k=5)
    assert not every.replay_exact and [s for s in range(1, 16) if every.captures(s)] == [5, 10, 15]
    half = CapturePolicy("half", half_codec="fp16")
    assert not half.replay_exact and half.codec == "fp16"
    assert not CapturePolicy("none").captures(1)
    with pytest.raises(ValidationError, match="capture"):
        CapturePolicy("sometimes")


def test_capture_copies_exact_gradients_and_applies_back_pressure():
    model = torch.nn.Linear(4, 3)
    model(torch.randn(2, 4)).sum().backward()
    cap = GradientCapture(model.named_parameters(), CapturePolicy(), slots=1)
    first = cap.capture(1)
    assert torch.equal(first.tensors["weight"], model.weight.grad)
    model.weight.grad.add_(1.0)  # the copy is independent of the live gradient
    assert not torch.equal(first.tensors["weight"], model.weight.grad)
    with pytest.raises(queue.Empty):
        cap.capture(2, timeout_s=0.05)  # the only slot is still held by the writer
    first.release()
    assert cap.capture(2, timeout_s=1.0) is not None


def test_writer_failure_is_raised_never_swallowed(engine):
    model = torch.nn.Linear(4, 3)
    model(torch.randn(2, 4)).sum().backward()
    cap = GradientCapture(model.named_parameters(), CapturePolicy(), slots=1)
    writer = BackgroundWriter(engine, session_id=987654)  # no such session: the FK refuses the rows
    with pytest.raises(WriterError, match="session 987654"):  # from a later submit or the flush
        for step in (1, 2, 3):
            writer.submit(StepRecord(step, 1.0, {}, 0.0, 0.1, [1], {}, {}, cap.capture(step, timeout_s=5)))
        writer.flush()
    with pytest.raises(WriterError):
        writer.submit(StepRecord(4, 1.0, {}, 0.0, 0.1, [1], {}, {}))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM gradient_blobs")).scalar() == 0
    assert cap.capture(5, timeout_s=1.0) is not None  # slots were released despite the failure
