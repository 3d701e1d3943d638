"""Gradient blob codec: tensor <-> checksummed chunks, as stored in ``gradient_blobs``.

A tensor is encoded with a codec, its bytes cut into chunks of at most ``chunk_bytes`` and each
chunk carries the SHA-256 of its own bytes, so a corrupted row is named precisely.

Codecs:

* ``raw``  — the tensor's own bytes (little-endian, C order): lossless, the only codec that
  supports exact replay.
* ``bf16`` / ``fp16`` — floating tensors rounded to bfloat16 / float16: half the bytes, lossy.

``dtype`` always records the tensor's original dtype, so ``decode`` returns a tensor of the
dtype the optimizer saw (lossy codecs are widened back).
"""

from __future__ import annotations

import dataclasses
import hashlib

import torch

CODECS = ("raw", "bf16", "fp16")
DEFAULT_CHUNK_BYTES = 1 << 20

_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


class BlobError(ValueError):
    """A stored blob cannot be decoded: missing chunk, bad checksum or inconsistent metadata."""


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One ``gradient_blobs`` row's payload and metadata (without session / step)."""

    param_name: str
    chunk_index: int
    chunk_count: int
    dtype: str
    shape: tuple[int, ...]
    codec: str
    checksum: bytes
    data: bytes


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def parse_dtype(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise BlobError(f"unknown dtype {name!r}")
    return dtype


def codec_dtype(codec: str, dtype: torch.dtype) -> torch.dtype:
    """The dtype whose bytes are stored for ``codec`` (the tensor's own for ``raw``)."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")
    return dtype if codec == "raw" or not dtype.is_floating_point else _HALF[codec]


def tensor_bytes(tensor: torch.Tensor) -> memoryview:
    """The bytes of a CPU tensor, without copying when it is contiguous."""
    flat = tensor.detach().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


@dataclasses.dataclass(frozen=True)
class Payload:
    """One parameter's stored bytes cut into chunk views (no copy), with the row metadata."""

    param_name: str
    dtype: str
    shape: tuple[int, ...]
    codec: str
    views: list[memoryview]


def checksum(data) -> bytes:
    """The SHA-256 a chunk row carries (hashlib releases the GIL for chunks over 2 KiB)."""
    return hashlib.sha256(data).digest()


def split(
    name: str,
    tensor: torch.Tensor,
    codec: str = "raw",
    *,
    original_dtype: torch.dtype | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Payload:
    """``tensor``'s stored bytes as chunk views of at most ``chunk_bytes`` (the one chunking rule).

    The views share the tensor's memory: they are valid only while the tensor is not reused.
    ``original_dtype`` is the dtype of the gradient before a lossy conversion (default: the
    tensor's own dtype).
    """
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    original = original_dtype or tensor.dtype
    if tensor.dtype != codec_dtype(codec, original):
        tensor = tensor.to(codec_dtype(codec, original))
    payload = tensor_bytes(tensor)
    count = max(1, -(-len(payload) // chunk_bytes))
    views = [payload[i * chunk_bytes : (i + 1) * chunk_bytes] for i in range(count)]
    return Payload(name, dtype_name(original), tuple(tensor.shape), codec, views)


def encode(
    name: str,
    tensor: torch.Tensor,
    codec: str = "raw",
    *,
    original_dtype: torch.dtype | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> list[Chunk]:
    """Checksummed chunks of ``tensor`` (a CPU tensor, already converted to ``codec``'s dtype when lossy).

    ``original_dtype`` is the dtype of the gradient before a lossy conversion (default: the
    tensor's own dtype).
    """
    p = split(name, tensor, codec, original_dtype=original_dtype, chunk_bytes=chunk_bytes)
    chunks = []
    for i, view in enumerate(p.views):
        data = bytes(view)
        chunks.append(Chunk(name, i, len(p.views), p.dtype, p.shape, codec, checksum(data), data))
    return chunks


def decode(chunks: list[Chunk], *, verify: bool = True) -> torch.Tensor:
    """The tensor stored in ``chunks`` (all chunks of one parameter), in its original dtype.

    Raises BlobError naming the parameter and chunk when a chunk is missing, duplicated or its
    checksum does not match.
    """
    if not chunks:
        raise BlobError("no chunks to decode")
    ordered = sorted(chunks, key=lambda c: c.chunk_index)
    first = ordered[0]
    expected = list(range(first.chunk_count))
    if [c.chunk_index for c in ordered] != expected:
        raise BlobError(f"{first.param_name}: chunks {[c.chunk_index for c in ordered]} != {expected}")
    if verify:
        for c in ordered:
            if checksum(c.data) != c.checksum:
                raise BlobError(f"{c.param_name}: chunk {c.chunk_index} checksum mismatch")
    original = parse_dtype(first.dtype)
    if first.codec not in CODECS:
        raise BlobError(f"{first.param_name}: unknown codec {first.codec!r} (known: {', '.join(CODECS)})")
    stored = codec_dtype(first.codec, original)
    raw = bytearray().join(c.data for c in ordered)
    numel = 1
    for d in first.shape:
        numel *= d
    if len(raw) != numel * stored.itemsize:
        raise BlobError(f"{first.param_name}: {len(raw)} bytes do not hold shape {list(first.shape)} of {stored}")
    flat = torch.frombuffer(raw, dtype=stored) if raw else torch.empty(0, dtype=stored)
    return flat.reshape(first.shape).to(original)
