"""From input packages to the CNN's input tensor.

Each package's ``ohlcv[tf]`` window (bars x OHLCV, oldest first) becomes a ``(5, window)`` block,
normalised so that models see shapes of moves, not price levels:

* open / high / low / close: ``100 * (price / last close of that window - 1)`` — percent from
  the most recent close;
* volume: ``log1p(volume)`` minus its mean over the window.

Blocks are stacked over the session's timeframes (shortest bar first) into
``(len(timeframes), 5, window)`` float32; a longer window is cut to its newest ``window`` bars.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
import torch

from app.db import queries
from app.errors import TrainsrvError
from app.ingest import package as ingest_package
from app.ingest import timeframes as ingest_timeframes
from app.nets.interface import InputSpec


def infer_spec(pkg: ingest_package.ModelInputPackage) -> InputSpec:
    """The input spec of a package: its timeframes (shortest first), the shortest window."""
    if not pkg.ohlcv:
        raise TrainsrvError(f"package of {pkg.symbol} at {pkg.ts} has no OHLCV windows")
    tfs = tuple(sorted(pkg.ohlcv, key=ingest_timeframes.seconds))
    return InputSpec(tfs, min(len(pkg.ohlcv[tf]) for tf in tfs))


def package_array(pkg: ingest_package.ModelInputPackage, spec: InputSpec, package_id: int | None = None) -> np.ndarray:
    """The normalised ``(timeframes, 5, window)`` float32 block of one package."""
    blocks = []
    for tf in spec.timeframes:
        bars = pkg.ohlcv.get(tf)
        if bars is None or len(bars) < spec.window:
            have = "no window" if bars is None else f"{len(bars)} bars"
            raise TrainsrvError(f"input package {package_id}: timeframe {tf} has {have}, "
                                f"the model needs {spec.window}")
        blocks.append(_normalise(bars[-spec.window:]))
    return np.stack(blocks).astype(np.float32)


def _normalise(bars: np.ndarray) -> np.ndarray:
    last_close = bars[-1, 3]
    prices = 100.0 * (bars[:, :4] / last_close - 1.0)
    volume = np.log1p(np.maximum(bars[:, 4], 0.0))
    volume = volume - volume.mean()
    return np.concatenate([prices, volume[:, None]], axis=1).T  # (5, window)


def load_inputs(conn: sa.Connection, package_ids: list[int],
                spec: InputSpec | None = None) -> tuple[torch.Tensor, InputSpec]:
    """Inputs of ``package_ids`` in order (hash-verified on read) and the spec used."""
    unique = list(dict.fromkeys(package_ids))
    rows = conn.execute(queries.get("trainer.package_payloads"), {"ids": unique})
    packages = {r.id: ingest_package.decode_payload(bytes(r.payload), bytes(r.data_hash), r.id) for r in rows}
    missing = [i for i in unique if i not in packages]
    if missing:
        raise TrainsrvError(f"input packages {missing[:5]} do not exist")
    spec = spec or infer_spec(packages[unique[0]])
    arrays = {i: package_array(packages[i], spec, i) for i in unique}
    return torch.from_numpy(np.stack([arrays[i] for i in package_ids])), spec
