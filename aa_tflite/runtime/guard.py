"""Interpreter calls that could take the user's process down, made in a child process first.

A C++ abort (``TFLITE_CHECK``, a double free, a segfault) inside an interpreter cannot be caught
in Python: it ends the process. ``probe`` loads a ``.tflite``, allocates it and invokes it once in
a short-lived child process (about 0.3 s: it imports only the runtime, not TensorFlow), and says
whether that worked, failed with an error, or crashed. ``convert`` probes its int8 baseline before
it runs it in-process, and probes the result on every kernel set it reports on.

No TensorFlow import.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np

from aa_tflite.types import Kernels

__all__ = ["ProbeResult", "probe", "probe_all"]


# The child: load, allocate, invoke once on a fixed pseudo-random input, print "ok". Its
# interpreter comes from the one place that makes them; that module imports no TensorFlow.
_CHILD = r"""
import sys
sys.excepthook = lambda kind, e, tb: print(f"{kind.__name__}: {e}", file=sys.stderr)
import numpy as np
from aa_tflite.runtime.interpreter import make_interpreter, micro_interpreter
path, kernels, inputs_path, arena = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with open(path, "rb") as f:
    model = f.read()
rng = np.random.RandomState(0)
def sample(shape, dtype):
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.randint(info.min, info.max + 1, size=shape).astype(dtype)
    return rng.rand(*shape).astype(dtype)
if kernels == "tflm":
    interp = micro_interpreter(model, arena_size=arena or max(8 * len(model), 4 << 20))
    if inputs_path == "arena":
        sys.stderr.flush()
        interp.print_allocations()
        print("ok")
        sys.exit(0)
    d = interp.get_input_details(0)
    def run(x):
        interp.set_input(x, 0)
        interp.invoke()
        return interp.get_output(0).copy()
else:
    interp = make_interpreter(model, kernels)
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    out = interp.get_output_details()[0]["index"]
    def run(x):
        interp.set_tensor(d["index"], x)
        interp.invoke()
        return interp.get_tensor(out).copy()
if inputs_path:  # one sample at a time, at the model's own batch size
    x = np.load(inputs_path)
    np.save(inputs_path + ".out.npy", np.concatenate([run(x[i:i + 1]) for i in range(len(x))]))
else:
    run(sample(tuple(d["shape"]), d["dtype"]))
print("ok")
"""
# The folder that holds this aa_tflite, first on the child's path: it imports the same package.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What happened when a model was loaded, allocated and invoked in a child process.

    Attributes:
        ok: It ran.
        crashed: The child died (a signal such as SIGABRT or SIGSEGV, or a hang), rather than
            reporting an error.
        reason: Empty when ``ok``; otherwise the runtime's last words, in one line.
        outputs: The raw outputs for ``probe(..., inputs=...)``, else None.
        log: What the child printed (TFLM's allocation record for ``tflm_arena_size``).
    """

    ok: bool
    crashed: bool
    reason: str
    outputs: np.ndarray | None = dataclasses.field(default=None, repr=False)
    log: str = dataclasses.field(default="", repr=False)


def probe(tflite: bytes, *, kernels: Kernels | str = Kernels.BUILTIN,
          inputs: np.ndarray | None = None, timeout: float = 120.0,
          tflm_arena_size: int | None = None) -> ProbeResult:
    """Loads, allocates and invokes ``tflite`` once in a child process.

    Example:
        >>> probe(open("model.tflite", "rb").read(), kernels="xnnpack").ok  # doctest: +SKIP
        True

    Args:
        tflite: The model's bytes.
        kernels: ``"builtin"``, ``"xnnpack"`` or ``"tflm"``.
        inputs: Raw input values (already in the model's input dtype), shaped
            ``(N, *input_shape)``; they are run one sample at a time and the raw outputs are
            returned in ``ProbeResult.outputs``. None runs one pseudo-random sample.
        timeout: Seconds before the child is killed and the call counts as a crash (a hang).
        tflm_arena_size: With ``kernels="tflm"``: allocate with this arena and print TFLM's
            allocation record (in ``ProbeResult.log``) instead of invoking.

    Returns:
        A ``ProbeResult``.
    """
    kernels = Kernels(kernels)
    with tempfile.TemporaryDirectory(prefix="aa_tflite_probe_") as folder:
        path = os.path.join(folder, "model.tflite")
        with open(path, "wb") as f:
            f.write(bytes(tflite))
        inputs_path = "arena" if tflm_arena_size else ""
        if inputs is not None:
            inputs_path = os.path.join(folder, "inputs.npy")
            np.save(inputs_path, np.asarray(inputs))
        path_entries = [_PACKAGE_PARENT, *filter(None, [os.environ.get("PYTHONPATH")])]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(path_entries))
        try:
            done = subprocess.run([sys.executable, "-c", _CHILD, path, kernels.value, inputs_path,
                                   str(tflm_arena_size or 0)],
                                  capture_output=True, text=True, timeout=timeout, env=env,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return ProbeResult(False, True, f"no answer within {timeout:g} s (a hang)")
        if done.returncode == 0 and done.stdout.strip().endswith("ok"):
            outputs = np.load(inputs_path + ".out.npy") if inputs is not None else None
            return ProbeResult(True, False, "", outputs, done.stderr + done.stdout)
    last = _last_words(done.stderr + done.stdout)
    if done.returncode < 0:
        try:
            name = signal.Signals(-done.returncode).name
        except ValueError:
            name = f"signal {-done.returncode}"
        return ProbeResult(False, True, f"the runtime crashed ({name}){': ' + last if last else ''}",
                           log=done.stderr + done.stdout)
    return ProbeResult(False, False, last or f"exit status {done.returncode}",
                       log=done.stderr + done.stdout)


def _last_words(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("File ", "Traceback", "^", "INFO:"))]
    return " ".join(useful[-3:])[-400:]


def probe_all(jobs, *, timeout: float = 120.0) -> list[ProbeResult]:
    """Runs several ``probe(tflite, kernels=...)`` calls at once, one child process each.

    Example:
        >>> plain, planned = probe_all([(base, "xnnpack"), (ours, "xnnpack")])  # doctest: +SKIP

    Args:
        jobs: ``(tflite, kernels)`` pairs.
        timeout: Seconds per child.

    Returns:
        One ``ProbeResult`` per job, in order.
    """
    from concurrent.futures import ThreadPoolExecutor

    jobs = list(jobs)
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        return list(pool.map(lambda job: probe(job[0], kernels=job[1], timeout=timeout), jobs))
