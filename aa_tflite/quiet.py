"""Keeping native (C/C++) output out of the user's terminal. No TensorFlow import."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile

from absl import logging

__all__ = ["quiet_native_output"]


@contextlib.contextmanager
def quiet_native_output():
    """Sends what C/C++ code writes to stdout and stderr to a buffer, yielded as a list that
    holds the text once the block ends. With absl verbosity at DEBUG it lets the text through."""
    said: list[str] = []
    if logging.get_verbosity() >= logging.DEBUG:
        yield said
        return
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield said
        finally:
            ctypes.CDLL(None).fflush(None)  # C stdio buffers what the C++ side printed
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            said.append(tmp.read().decode(errors="replace"))
