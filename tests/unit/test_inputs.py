"""Model inputs from packages: each timeframe's own window, and the feature arrays, through the input spec."""

import dataclasses
import datetime as dt

import numpy as np
import pytest

from app.config import Settings
from app.errors import ValidationError
from app.ingest.package import ModelInputPackage
from app.nets import inputs
from app.nets.interface import CHANNELS, InputSpec

WINDOWS = {"1m": 60, "5m": 24, "1h": 12}


def _package() -> ModelInputPackage:
    rng = np.random.default_rng(0)
    ohlcv, bar_ts = {}, {}
    for tf, n in WINDOWS.items():
        close = 100 + np.cumsum(rng.normal(0, 0.1, n))
        ohlcv[tf] = np.column_stack([close, close + 0.1, close - 0.1, close, rng.uniform(1, 2, n)])
        bar_ts[tf] = np.arange(n, dtype=np.int64) * 60
    features = {"rsi_14": np.linspace(30, 70, 60), "volume_z_20": np.linspace(-1, 1, 60)}
    return ModelInputPackage(
        symbol="SIM",
        ts=dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
        ohlcv=ohlcv,
        bar_ts=bar_ts,
        features=features,
        metadata={"source_timeframe": "1m"},
        windows=dict(WINDOWS),
    )


def test_each_timeframe_keeps_its_package_window_and_features_are_channels():
    pkg = _package()
    spec = inputs.infer_spec(pkg, Settings())
    assert spec.timeframes == ("1m", "5m", "1h") and spec.windows == (60, 24, 12) and spec.window == 60
    assert spec.features == ("rsi_14", "volume_z_20") and spec.feature_timeframe == "1m"
    x = inputs.package_array(pkg, spec)
    assert x.shape == (3, CHANNELS + 2, 60) == spec.shape()
    # Right-aligned: the 5m row has 24 bars and zeros before them; its newest close is 0 % from itself.
    assert np.all(x[1, :, :36] == 0) and np.any(x[1, :CHANNELS, 36:] != 0) and x[1, 3, -1] == 0
    # Features only in the block of the series they were computed on.
    assert np.allclose(x[0, CHANNELS], np.linspace(30, 70, 60)) and np.all(x[1:, CHANNELS:] == 0)
    assert InputSpec(**spec.to_config()) == spec  # what a session stores rebuilds it


def test_shortest_and_configured_windows_and_named_features():
    pkg = _package()
    old = inputs.infer_spec(pkg, Settings(input_windows="shortest", input_features="none"))
    assert (old.window, old.windows, old.channels) == (12, (), CHANNELS)
    assert inputs.package_array(pkg, old).shape == (3, CHANNELS, 12)
    some = inputs.infer_spec(pkg, Settings(input_windows="1m=30", input_features="volume_z_20"))
    assert some.windows == (30, 24, 12) and some.window == 60 and some.features == ("volume_z_20",)
    x = inputs.package_array(pkg, some)
    assert np.all(x[0, :CHANNELS, :30] == 0) and np.allclose(x[0, CHANNELS], np.linspace(-1, 1, 60))
    with pytest.raises(ValidationError, match="input_features"):
        inputs.infer_spec(pkg, Settings(input_features="macd"))
    with pytest.raises(ValidationError, match="input_windows"):
        inputs.infer_spec(pkg, Settings(input_windows="1m=-3"))


def test_a_package_with_less_history_is_padded_not_refused():
    pkg = _package()
    spec = inputs.infer_spec(pkg, Settings())
    short = dataclasses.replace(
        pkg, ohlcv={**pkg.ohlcv, "5m": pkg.ohlcv["5m"][-10:]}, bar_ts={**pkg.bar_ts, "5m": pkg.bar_ts["5m"][-10:]}
    )
    x = inputs.package_array(short, spec)
    assert np.all(x[1, :, :50] == 0) and np.any(x[1, :CHANNELS, 50:] != 0)
