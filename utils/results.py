"""Result files: JSON where an undefined number (the IoU of a class that never occurs) is ``null``,
and the one way files are written: atomically.

Python's ``json`` writes NaN as a bare ``NaN``, which is not JSON: strict parsers (``jq``, browsers,
``json.loads(..., parse_constant=...)``) reject the file. Training and evaluation write their
metrics through this one function. Every output file (results, predictions, pictures, checkpoints
through ``utils/checkpoint.py``) goes through ``atomic_write``: a reader never sees half a file, a
symbolic link at the path is replaced and never written through, and a full disk is an error that
names the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np


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


def human_size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n} bytes"


def disk_full(err: BaseException, directory: Path) -> int:
    """``errno.ENOSPC`` / ``errno.EDQUOT`` if ``err`` or an exception in its chain is one, else 0."""
    seen, pending = set(), [err]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e.errno
        pending += [e.__cause__, e.__context__]
    return 0


def disk_full_error(code: int, path: Path, existed: bool, written: int | None) -> OSError:
    """``OSError(code)`` saying which file could not be written, what is left of it, and the free space."""
    where = "no space left on" if code == errno.ENOSPC else "disk quota exceeded writing"
    facts = []
    if written:
        facts.append(f"the write stopped after {human_size(written)}")
    try:
        facts.append(f"{human_size(shutil.disk_usage(path.parent).free)} free there now")
    except OSError:
        pass
    kept = f"the previous {path.name} is intact" if existed else f"no {path.name} was written"
    facts = f" ({', '.join(facts)})" if facts else ""
    return OSError(code, f"{where} {path}{facts}; {kept}, the partial file was removed")


@contextlib.contextmanager
def atomic_write(
    path: str | Path,
    mode: str = "w",
    *,
    fsync: bool = False,
    full: Callable[[BaseException, Path], int] = disk_full,
) -> Iterator[IO]:
    """A file to write ``path`` through: a temporary file in the same folder, renamed over ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was. A symbolic link at
    ``path`` is replaced by the new file, never written through (a link planted in an output folder
    cannot send a write elsewhere). A full disk or quota (``full`` recognises it in an exception) is
    an ``OSError(ENOSPC / EDQUOT)`` whose message names ``path`` and the free space.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = os.path.lexists(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        code = full(err, path.parent)
        if code:
            raise disk_full_error(code, path, existed, None) from err
        raise
    try:
        permit_as_open_would(fd)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows when on the same filesystem
    except BaseException as err:
        code = full(err, path.parent) if isinstance(err, Exception) else 0
        try:
            written = os.path.getsize(tmp)
        except OSError:
            written = None
        Path(tmp).unlink(missing_ok=True)
        if code:
            raise disk_full_error(code, path, existed, written) from err
        raise


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as strict JSON (``allow_nan=False``) through ``atomic_write``."""
    path = Path(path)
    text = json.dumps(json_safe(data), indent=1, allow_nan=False)
    with atomic_write(path) as f:
        f.write(text + "\n")
    return path


@contextlib.contextmanager
def atomic_npy(path: str | Path, shape: tuple[int, ...], dtype: Any) -> Iterator[Any]:
    """A ``.npy`` file of ``shape`` written through ``atomic_write`` and filled in place: yields its
    memory map (numpy's ``open_memmap`` layout), so an array larger than memory is written part by part.
    ``np.load(path, mmap_mode="r")`` reads it back the same way."""
    dtype = np.dtype(dtype)
    with atomic_write(path, "w+b") as f:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
        np.lib.format.write_array_header_1_0(f, header)
        offset = f.tell()
        f.truncate(offset + math.prod(shape) * dtype.itemsize)  # sparse until written
        f.flush()
        array = np.memmap(f, dtype, "r+", offset, tuple(shape))
        yield array
        array.flush()
        del array
