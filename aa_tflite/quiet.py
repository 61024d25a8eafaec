"""Keeping native (C/C++) output out of the user's terminal. No TensorFlow import.

Two tools: ``quiet_native_output`` captures what native code prints to stdout and stderr during a
block (TensorFlow's converter, for example) and hands the text back; ``hidden_native_logs`` hides
what native code logs to stderr for a whole command (TensorFlow's start-up lines, LiteRT's
"Created TensorFlow Lite XNNPACK delegate") while Python's own stderr still reaches the terminal.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging as std_logging
import os
import sys
import tempfile
from typing import TextIO

from absl import logging

__all__ = ["hidden_native_logs", "quiet_native_output"]


@contextlib.contextmanager
def quiet_native_output():
    """Sends what C/C++ code writes to stdout and stderr to a buffer, yielded as a list that
    holds the text once the block ends. With absl verbosity at DEBUG it lets the text through.

    Example:
        >>> with quiet_native_output() as said:  # doctest: +SKIP
        ...     import tensorflow
        >>> said[0]  # doctest: +SKIP
    """
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


def _writes_to_fd_2(stream: object) -> bool:
    try:
        return stream.fileno() == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):  # a capture buffer has no file descriptor
        return False


def _repoint_handlers(old: TextIO, new: TextIO) -> None:
    """Log handlers that write to ``old`` (the standard library's and absl's, which keep the
    stream they were made with) write to ``new`` instead."""
    handlers = [*std_logging.getLogger().handlers, logging.get_absl_handler().python_handler]
    for h in handlers:
        if isinstance(h, std_logging.StreamHandler) and h.stream is old:
            h.setStream(new)


@contextlib.contextmanager
def hidden_native_logs():
    """Hides what C/C++ code writes to stderr (file descriptor 2) during the block.

    TensorFlow and LiteRT log from C++ straight to file descriptor 2, whatever
    ``TF_CPP_MIN_LOG_LEVEL`` says for some lines. For the block, descriptor 2 goes to a
    temporary file that is then dropped; ``sys.stderr`` (errors, progress bars, absl warnings)
    is pointed at a copy of the real descriptor 2, so Python's output still shows. When
    ``sys.stderr`` is not descriptor 2 (pytest's capture, for one) it is left as it is.

    Example:
        >>> with hidden_native_logs():  # doctest: +SKIP
        ...     interpreter = make_interpreter(tflite, Kernels.XNNPACK)
    """
    old = sys.stderr
    old.flush()
    saved = os.dup(2)
    new = os.fdopen(os.dup(saved), "w", buffering=1, encoding=getattr(old, "encoding", None),
                    errors="backslashreplace") if _writes_to_fd_2(old) else None
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        if new is not None:
            sys.stderr = new
            _repoint_handlers(old, new)
        try:
            yield
        finally:
            ctypes.CDLL(None).fflush(None)  # C stdio buffers what the C++ side printed
            if new is not None:
                new.flush()
                _repoint_handlers(new, old)
                sys.stderr = old
                new.close()
            os.dup2(saved, 2)
            os.close(saved)
