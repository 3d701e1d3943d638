"""The reference CNN, able to freeze inside a training step on request (kill -9 tests).

While the file ``$TRAINSRV_TEST_STALL_DIR/stall`` exists, the next forward pass in training
mode writes ``stalled`` (with the pid) and waits until ``stall`` is removed. A test creates
``stall``, waits for ``stalled`` and kills the process: the kill lands between the step's
zero_grad and its optimizer step, every time. Parameters and numerics are the reference
model's (same class, same names), so a session trained with it replays and verifies normally.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from app.nets import cnn


class StallingCNN(cnn.MultiTimeframeCNN):
    def forward(self, x):
        folder = os.environ.get("TRAINSRV_TEST_STALL_DIR")
        if folder and self.training and (Path(folder) / "stall").exists():
            (Path(folder) / "stalled").write_text(str(os.getpid()))
            while (Path(folder) / "stall").exists():
                time.sleep(0.01)
        return super().forward(x)


def build(input_spec, **config) -> StallingCNN:
    return StallingCNN(input_spec, **config)
