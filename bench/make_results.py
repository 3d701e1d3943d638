"""Rebuild bench/RESULTS.md: its title and summary table as they are, then each area's record from
bench/results/<area>.md (its title one heading level down), so that each record lives in one place.

    python bench/make_results.py
"""

from __future__ import annotations

import re
from pathlib import Path

BENCH = Path(__file__).resolve().parent
AREAS = [
    "ingest",
    "outcomes",
    "jobs",
    "trainer",
    "replay",
    "session_replay",
    "similar",
    "cli",
    "gradients",
    "loop",
    "models",
]
SEPARATOR = "\n---\n"


def build(current: str) -> str:
    head = current[: current.index(SEPARATOR) + len(SEPARATOR)]
    records = [re.sub(r"(?m)^# ", "## ", (BENCH / "results" / f"{area}.md").read_text().strip("\n")) for area in AREAS]
    return head + "\n" + "\n\n---\n\n".join(records) + "\n"


def main() -> None:
    path = BENCH / "RESULTS.md"
    path.write_text(build(path.read_text()))


if __name__ == "__main__":
    main()
