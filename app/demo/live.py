"""The orchestrator running the deployed models: a prediction source for ``app.demo.stream``.

``DeployedModels(client)`` answers each package with one call per model kind, made by the model
deployed for the package's symbol (``Client.deployed_model``) and recorded with its version string
(``Prediction.model_version``), so ``v_model_live_performance`` can score each deployed version on
what it called after its deployment. Before the first promotion of a kind it falls back to the
demo's rule-based stand-ins. Before each decision it asks which version is deployed (one indexed
query; a bot in another language can LISTEN on ``trainsrv_models`` instead) and loads a model only
when the version changed, so a promotion or a rollback reaches the next call.

    python -m app.demo.live --symbols SIM-A --hours 8 --speed 480     # an orchestrator process
"""

from __future__ import annotations

import logging
import sys

from app.client import Client, Prediction
from app.demo import stream
from app.ingest.package import ModelInputPackage

log = logging.getLogger(__name__)

KINDS = ("cnn", "rl")


class DeployedModels:
    """A ``PredictionSource`` asking the deployed models (see the module docstring)."""

    def __init__(
        self,
        client: Client,
        horizon_s: int,
        fallback: stream.PredictionSource | None = None,
        kinds: tuple[str, ...] = KINDS,
    ):
        self.client, self.horizon_s, self.kinds = client, horizon_s, kinds
        self.fallback = fallback or stream.rule_models(horizon_s=horizon_s)
        self._models: dict[tuple[str, str], object] = {}
        self.switches: list[dict] = []  # every version change seen, in order

    def __call__(self, package: ModelInputPackage, package_id: int) -> list[Prediction]:
        calls = []
        standins = None
        for kind in self.kinds:
            model = self._deployed(kind, package.symbol)
            if model is None:
                standins = standins if standins is not None else self.fallback(package, package_id)
                calls += [p for p in standins if p.model_kind == kind]
                continue
            action, confidence = model.call(package)
            calls.append(
                Prediction(
                    model_kind=kind,
                    model_version=model.version,
                    action=action,
                    confidence=min(1.0, max(0.0, confidence)),
                    horizon_s=self.horizon_s,
                )
            )
        return calls

    def _deployed(self, kind: str, symbol: str):
        version = self.client.deployed_version(kind, symbol)
        current = self._models.get((kind, symbol))
        if version is None:
            self._models.pop((kind, symbol), None)
            return None
        if current is None or current.version != version:
            current = self.client.deployed_model(kind, symbol)
            self._models[(kind, symbol)] = current
            if current is not None:
                self.switches.append({"model_kind": kind, "symbol": symbol, "version": current.version})
                log.info("orchestrator now calls %s %s with %s", kind, symbol, current.version)
        return current


def run(engine, spec: stream.StreamSpec, markets: dict | None = None) -> dict:
    """Stream ``spec`` with the deployed models' calls; returns the stream's counts and the switches seen."""
    with Client(engine) as client:
        source = DeployedModels(client, spec.horizon_s, stream.rule_models(spec.seed + 11, spec.horizon_s))
        counts = stream.Streamer(engine, spec, source, markets=markets).run()
    return {**counts, "switches": source.switches}


def main(argv: list[str] | None = None) -> int:
    """``python -m app.demo.live``: an orchestrator process using the deployed models."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    return stream.command_line("python -m app.demo.live", __doc__.splitlines()[0], argv, run)


if __name__ == "__main__":
    sys.exit(main())
