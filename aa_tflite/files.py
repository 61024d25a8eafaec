"""Atomic file output: a reader never sees a half-written file, and a failed write loses nothing."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

from aa_tflite.types import AAError

__all__ = ["atomic_write", "atomic_write_all", "check_output_path"]


def check_output_path(path: str | os.PathLike) -> None:
    """Raises a clear ``AAError`` now if files cannot be written at ``path`` later (an output
    prefix under a regular file, or in a folder that cannot be written), creating nothing.

    Example:
        >>> check_output_path("out/digits")  # doctest: +SKIP
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise AAError(f"Cannot write {path!r}: it is a folder. Give an output prefix such as "
                      f"{os.path.join(path, 'model')!r}.")
    probe = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise AAError(f"Cannot write {path!r}: {probe!r} is a file, not a folder. Choose an "
                      "output path in a folder.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise AAError(f"Cannot write to the folder {probe!r} (permission denied). Choose an "
                      "output path in a folder you can write to.")


def _folder_for(path: str) -> str:
    """Creates the folder of ``path`` if needed; a clear error if it cannot be one."""
    folder = os.path.dirname(os.path.abspath(path))
    check_output_path(path)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise AAError(f"Cannot create the folder {folder!r} for {path!r}: {e.strerror}. Choose "
                      "an output path in a folder you can write to.") from e
    return folder


def _write_temp(path: str, data: bytes | str) -> str:
    folder = _folder_for(path)
    raw = data.encode() if isinstance(data, str) else bytes(data)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".")
    except OSError as e:
        raise AAError(f"Cannot write to the folder {folder!r}: {e.strerror}. Choose an output "
                      "path in a folder you can write to.") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Example:
        >>> atomic_write("out/model.tflite", tflite_bytes)  # doctest: +SKIP
    """
    atomic_write_all({os.fspath(path): data})


def atomic_write_all(files: Mapping[str | os.PathLike, bytes | str]) -> list[str]:
    """Writes several files as one set: all are written to temporary files first, then renamed
    into place. If any write fails, nothing is replaced and the temporary files are removed.

    Example:
        >>> atomic_write_all({"out/a.tflite": b"...", "out/a.json": "{}"})  # doctest: +SKIP
        ['out/a.tflite', 'out/a.json']

    Returns:
        The paths written.

    Raises:
        AAError: A folder cannot be created or written to, or a path names a folder.
    """
    paths = [os.fspath(p) for p in files]
    for p in paths:
        if os.path.isdir(p):
            raise AAError(f"Cannot write {p!r}: it is a folder. Choose another output path.")
    temps: list[tuple[str, str]] = []
    try:
        for path, data in zip(paths, files.values()):
            temps.append((_write_temp(path, data), path))
        for tmp, path in temps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in temps:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return paths
