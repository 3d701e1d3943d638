"""Reliability tests: prints how many hostile inputs each property test tried (docs/reliability.md
records these figures)."""

from __future__ import annotations

import sys


def pytest_terminal_summary(terminalreporter):
    tallies = {}
    for name, module in list(sys.modules.items()):
        if name.rpartition(".")[2].startswith("test_hostile_"):
            tallies.update(getattr(module, "TRIED", {}))
    if tallies:
        terminalreporter.section("hostile inputs tried")
        for what, count in sorted(tallies.items()):
            terminalreporter.write_line(f"{count:>7}  {what}")
        terminalreporter.write_line(f"{sum(tallies.values()):>7}  in all")
