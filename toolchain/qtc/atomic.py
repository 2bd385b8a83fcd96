"""Write files and directories atomically: to a temp path beside the target, then rename.

A failure at any point (an exception, Ctrl-C) removes the temp path, so the
target is either the complete new artifact or untouched: never half-written.

* :func:`atomic_file` / :func:`atomic_dir` are context managers that yield the
  temp path to write to and move it into place when the block succeeds.
* :func:`save_npy` / :func:`save_npz` / :func:`save_json` are the common cases.
  ``save_npz`` writes a deterministic zip (sorted entries, fixed timestamps),
  unlike ``numpy.savez``, so the same arrays give byte-identical files.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np


def _prepare(path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp file path in ``path``'s folder; rename it to ``path`` on success."""
    path = _prepare(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temp directory; on success it replaces the directory ``path``.

    An existing ``path`` is moved aside first and deleted only after the new
    one is in place.
    """
    path = _prepare(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists() or path.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
            os.replace(tmp, path)
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            else:
                old.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    return Path(path)


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    from .ir.serialize import _write_npz  # the IR's deterministic zip writer

    with atomic_file(path) as tmp:
        _write_npz(tmp, arrays)
    return Path(path)


def save_json(path: str | os.PathLike, doc) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return Path(path)


def save_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)

