"""One way to write a file that readers and resumes rely on: whole or not at all.

Every file a crash must not corrupt (checkpoints, the searcher's state, trials.csv, a trial's final
report, the simulation cache) is written here: to a temporary file beside the target, then renamed over it.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path


def write_atomically(path: str | Path, content: str | bytes) -> None:
    """Replace `path` with `content` in one rename, so a killed writer never leaves half a file.

    The temporary name is unique per call, so concurrent writers of one path (trials that share a
    simulation-cache key) never write into each other's file: the last rename wins with a whole one.
    It is created with `open(..., "x")`, which keeps the umask's permissions (mkstemp would make it 0600).
    """
    path = Path(path)
    data = content.encode("utf-8") if isinstance(content, str) else content
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
