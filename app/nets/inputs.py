"""From input packages to the CNN's input tensor.

Each package's ``ohlcv[tf]`` window (bars x OHLCV, oldest first) becomes a ``(5, window)`` block,
normalised so that models see shapes of moves, not price levels:

* open / high / low / close: ``100 * (price / last close of that window - 1)`` — percent from
  the most recent close;
* volume: ``log1p(volume)`` minus its mean over the window.

Blocks are stacked over the session's timeframes (shortest bar first) into
``(len(timeframes), channels, window)`` float32. Which bars and features (see ``InputSpec``) comes
from the settings when a session starts (``infer_spec``):

* ``input_windows``: ``package`` (default) — each timeframe keeps the window length its package
  declares (60 / 24 / 16 / 12 bars in the demo's packages), ``window`` is the longest and shorter
  rows are zero on the left; ``shortest`` — every timeframe cut to the shortest window (before
  issue 16 the only behaviour); or explicit lengths ``1m=30,5m=24,...``;
* ``input_features``: ``all`` (default) — every feature array the package carries, as extra
  channels of the timeframe they were computed on; ``none``; or a comma-separated list of names.

Sessions store their spec, so a resumed or replayed session reads its inputs as it was trained.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
import torch

from app.config import Settings, get_settings
from app.db import queries
from app.errors import TrainsrvError, ValidationError
from app.ingest import package as ingest_package
from app.ingest import timeframes as ingest_timeframes
from app.nets.interface import CHANNELS, InputSpec


def infer_spec(pkg: ingest_package.ModelInputPackage, settings: Settings | None = None) -> InputSpec:
    """The input spec of a package under the ``input_windows`` / ``input_features`` settings."""
    settings = settings or get_settings()
    if not pkg.ohlcv:
        raise TrainsrvError(f"package of {pkg.symbol} at {pkg.ts} has no OHLCV windows")
    tfs = tuple(sorted(pkg.ohlcv, key=ingest_timeframes.seconds))
    # The window each timeframe is meant to have (declared by the package), else the bars it has.
    declared = pkg.windows or {}
    have = {tf: int(declared.get(tf) or len(pkg.ohlcv[tf])) for tf in tfs}
    mode = settings.input_windows.strip()
    if mode == "shortest":
        windows = {tf: min(have.values()) for tf in tfs}
    elif mode == "package":
        windows = have
    else:
        windows = {**have, **_configured_windows(mode)}
    features = _features(pkg, settings.input_features.strip())
    feature_tf = _feature_timeframe(pkg, tfs) if features else None
    longest = max(windows[tf] for tf in tfs)
    if features:
        longest = max(longest, min(len(pkg.features[name]) for name in features))
    per_tf = () if mode == "shortest" else tuple(windows[tf] for tf in tfs)
    return InputSpec(tfs, longest, CHANNELS + len(features), per_tf, features, feature_tf)


def _configured_windows(text: str) -> dict[str, int]:
    windows = {}
    for part in text.split(","):
        tf, sep, n = part.partition("=")
        if not sep or not n.strip().isdigit() or int(n) < 1:
            raise ValidationError("input_windows", f"must be package, shortest or tf=bars,..., got {text!r}")
        windows[tf.strip()] = int(n)
    return windows


def _features(pkg: ingest_package.ModelInputPackage, mode: str) -> tuple[str, ...]:
    if mode in ("", "none"):
        return ()
    available = tuple(sorted(pkg.features or {}))
    if mode == "all":
        return available
    wanted = tuple(name.strip() for name in mode.split(",") if name.strip())
    missing = [name for name in wanted if name not in available]
    if missing:
        raise ValidationError(
            "input_features",
            f"the packages carry no feature {missing[0]!r} (they carry: {', '.join(available) or 'none'})",
        )
    return wanted


def _feature_timeframe(pkg: ingest_package.ModelInputPackage, tfs: tuple[str, ...]) -> str:
    source = (pkg.metadata or {}).get("source_timeframe")
    return source if source in tfs else tfs[0]


def package_array(pkg: ingest_package.ModelInputPackage, spec: InputSpec, package_id: int | None = None) -> np.ndarray:
    """The normalised ``(timeframes, channels, window)`` float32 block of one package."""
    out = np.zeros(spec.shape(), dtype=np.float32)
    for i, tf in enumerate(spec.timeframes):
        n = spec.window_of(tf)
        bars = pkg.ohlcv.get(tf)
        # Per-timeframe windows: a package with less history than the window is zero on the left,
        # as a shorter window is; with one window for all ("shortest"), every bar must be there.
        if bars is None or len(bars) == 0 or (not spec.windows and len(bars) < n):
            have = "no window" if bars is None else f"{len(bars)} bars"
            raise TrainsrvError(f"input package {package_id}: timeframe {tf} has {have}, the model needs {n}")
        bars = bars[-n:]
        out[i, :CHANNELS, spec.window - len(bars) :] = _normalise(bars)
    if spec.features:
        row = spec.timeframes.index(spec.feature_timeframe)
        for j, name in enumerate(spec.features):
            values = (pkg.features or {}).get(name)
            if values is None:
                raise TrainsrvError(f"input package {package_id}: no feature array {name!r}, the model needs it")
            values = np.nan_to_num(
                np.asarray(values, dtype=np.float64)[-spec.window :], nan=0.0, posinf=0.0, neginf=0.0
            )
            out[row, CHANNELS + j, spec.window - len(values) :] = values
    return out


def _normalise(bars: np.ndarray) -> np.ndarray:
    last_close = bars[-1, 3]
    prices = 100.0 * (bars[:, :4] / last_close - 1.0)
    volume = np.log1p(np.maximum(bars[:, 4], 0.0))
    volume = volume - volume.mean()
    return np.concatenate([prices, volume[:, None]], axis=1).T  # (5, window)


def decode_packages(conn: sa.Connection, package_ids: list[int]) -> tuple[dict, dict[int, str]]:
    """The packages of ``package_ids`` that decode (hash-verified), and why each other one does not.

    A package stored by an older, laxer version that this code cannot decode any more is reported by
    id, so training can go on without it; a tampered package (hash mismatch) still raises."""
    unique = list(dict.fromkeys(package_ids))
    packages, undecodable = {}, {}
    for r in conn.execute(queries.get("trainer.package_payloads"), {"ids": unique}):
        try:
            packages[r.id] = ingest_package.decode_payload(bytes(r.payload), bytes(r.data_hash), r.id)
        except ingest_package.PackageUndecodable as exc:
            undecodable[r.id] = str(exc)
    return packages, undecodable


def load_inputs(
    conn: sa.Connection, package_ids: list[int], spec: InputSpec | None = None, packages: dict | None = None
) -> tuple[torch.Tensor, InputSpec]:
    """Inputs of ``package_ids`` in order (hash-verified on read) and the spec used; ``packages``: already
    decoded ones (``decode_packages``). A package that cannot be decoded raises, naming it."""
    unique = list(dict.fromkeys(package_ids))
    if packages is None or any(i not in packages for i in unique):
        packages, undecodable = decode_packages(conn, unique)
        if undecodable:
            raise TrainsrvError(next(iter(undecodable.values())))
    missing = [i for i in unique if i not in packages]
    if missing:
        raise TrainsrvError(f"input packages {missing[:5]} do not exist")
    spec = spec or infer_spec(packages[unique[0]])
    arrays = {i: package_array(packages[i], spec, i) for i in unique}
    return torch.from_numpy(np.stack([arrays[i] for i in package_ids])), spec
