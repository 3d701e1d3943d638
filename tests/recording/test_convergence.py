"""Convergence tracking on a smoothed loss: plateaus are counted, improvements reset them."""

import math

from app.recording.convergence import ConvergenceTracker


def test_a_flat_loss_converges_after_patience_steps():
    tracker = ConvergenceTracker(patience=5)
    for _ in range(5):
        tracker.update(0.7)
        assert not tracker.converged
    tracker.update(0.7)
    assert tracker.converged and tracker.plateau_steps == 5 and tracker.best_loss == 0.7


def test_steady_improvement_never_converges_and_a_plateau_after_it_does():
    tracker = ConvergenceTracker(patience=3, smoothing=0.0)  # no smoothing: each step is its own loss
    for step in range(20):
        tracker.update(1.0 * 0.9**step)  # 10 % better every step, above min_delta
    assert not tracker.converged and tracker.plateau_steps == 0
    for _ in range(3):
        tracker.update(tracker.best_loss)
    assert tracker.converged


def test_non_finite_losses_count_as_plateau_and_state_round_trips():
    tracker = ConvergenceTracker(patience=2)
    tracker.update(1.0)
    tracker.update(math.nan)
    tracker.update(math.inf)
    assert tracker.converged and tracker.best_loss == 1.0
    again = ConvergenceTracker.from_state(tracker.state())
    assert again == tracker
