"""Result files: JSON where an undefined number (the IoU of a class that never occurs) is ``null``.

Python's ``json`` writes NaN as a bare ``NaN``, which is not JSON: strict parsers (``jq``, browsers,
``json.loads(..., parse_constant=...)``) reject the file. Training and evaluation write their
metrics through this one function, atomically (a reader never sees half a file).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with NaN / infinity replaced by None and tuples by lists, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def permit_as_open_would(fd: int) -> None:
    """Give a ``tempfile.mkstemp`` file the permissions ``open`` would (0666 less the umask).

    mkstemp creates files 0600; renamed into place they would stay unreadable to the rest of a
    team on a shared filesystem, unlike every other file a run writes.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as strict JSON (``allow_nan=False``) via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_safe(data), indent=1, allow_nan=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        permit_as_open_would(fd)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
