"""What several exports share: a file's points as single-subgraph files, C identifiers, and
writing a set of files at once. No TensorFlow import."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from aa_tflite.files import atomic_write_all
from aa_tflite.tflite import multipoint

__all__ = ["ident", "point_files", "write_files"]


def point_files(tflite: bytes) -> dict[str, bytes]:
    """Point key -> its single-subgraph file: each signature of a multi-point file split out,
    or the file itself (keyed by its one signature, else ``"model"``).

    Example:
        >>> list(point_files(open("out/digits.tflite", "rb").read()))  # doctest: +SKIP
        ['kib2p5', 'kib1p8', 'kib1p2']
    """
    keys = multipoint.signature_keys(tflite)
    if len(keys) > 1:
        return {k: multipoint.split(tflite, k) for k in keys}
    return {keys[0] if keys else "model": bytes(tflite)}


def ident(text: str) -> str:
    """``text`` as a C identifier and file stem: other characters become ``_``, and a leading
    digit gets ``m_`` in front.

    Example:
        >>> ident("digits-v2"), ident("2x")
        ('digits_v2', 'm_2x')
    """
    out = re.sub(r"[^0-9A-Za-z_]", "_", text)
    return out if out and not out[0].isdigit() else f"m_{out}"


def write_files(out_dir: str | os.PathLike, files: Mapping[str, bytes | str]) -> tuple[str, ...]:
    """Writes ``file name -> contents`` into ``out_dir`` (created if needed), all or none
    (``files.atomic_write_all``); returns the paths, in order."""
    out = os.fspath(out_dir)
    return tuple(atomic_write_all({os.path.join(out, f): data for f, data in files.items()}))
