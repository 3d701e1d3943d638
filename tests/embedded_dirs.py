"""Folders the embedded server's system user can reach, for tests that start their own server.

pytest makes its temporary folders owner-only (0700), and the embedded server no longer widens any
folder's mode itself (it refuses a data dir its user cannot reach). As root, a test therefore opens
its own temporary folders for search (o+x, no listing) before handing one to ``EmbeddedServer``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def reachable(path: Path) -> Path:
    """``path`` (created if needed), made searchable by other users along with its parents under /tmp."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return path  # the server runs as we do
    for folder in [path, *path.parents]:
        if folder == Path(folder.anchor) or folder == Path("/tmp"):
            break
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
    return path
