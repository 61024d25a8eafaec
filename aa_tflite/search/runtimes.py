"""Which runtimes run a model: the int8 baseline before it runs in this process, and the planned
model on every kernel set the report speaks for. Each run is made in a child process
(``aa_tflite.runtime.guard``), so a runtime's abort cannot end the user's process."""

from __future__ import annotations

from aa_tflite.runtime import guard
from aa_tflite.types import AAError, Kernels

__all__ = ["XNNPACK_WORKAROUND", "probe_baseline", "runtime_notes"]

XNNPACK_WORKAROUND = (
    "use LiteRT's builtin kernels: in Python, Interpreter(..., experimental_op_resolver_type="
    "OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES); on Android, "
    "Interpreter.Options().setUseXNNPACK(false)")


def probe_baseline(tflite: bytes, kernels: Kernels | str = Kernels.BUILTIN) -> None:
    """Runs the plain int8 conversion once in a child process before it is run in this one.

    Raises:
        AAError: LiteRT's builtin kernels, or ``kernels``, cannot run it; the message says why
            and what to do.
    """
    for k in dict.fromkeys((Kernels.BUILTIN, Kernels(kernels))):
        result = guard.probe(tflite, kernels=k)
        if result.ok:
            continue
        if k == Kernels.BUILTIN:
            raise AAError(f"LiteRT cannot run the plain int8 conversion of this model, before any "
                          f"aa_tflite edit: {result.reason}. Check the model in plain TFLite "
                          "(tf.lite.TFLiteConverter with full-integer quantization) first; layers "
                          "whose outputs are constant on the representative data are a common "
                          "cause.")
        raise AAError(f"kernels={k.value!r} cannot run the plain int8 conversion of this model, "
                      f"before any aa_tflite edit: {result.reason}. That is the runtime's "
                      "limitation; measure with kernels='builtin' (and deploy with builtin "
                      "kernels).")


def runtime_notes(base: bytes, planned: bytes) -> list[str]:
    """Runs the planned model once with LiteRT's default XNNPACK delegate (what Android apps get)
    and in TFLite Micro, each in a child process, and says where it does not run. The plain int8
    model is run only on a kernel set that fails the planned one: it tells the runtime's
    limitation from the plan's."""
    notes = []
    targets = ((Kernels.XNNPACK, "LiteRT's default XNNPACK delegate"),
               (Kernels.TFLM, "TFLite Micro"))
    ours = guard.probe_all([(planned, k) for k, _ in targets])
    failed = [k for (k, _), got in zip(targets, ours) if not got.ok]
    if planned == base:  # the same bytes: the same answers
        plain = dict(zip([k for k, _ in targets], ours))
    else:
        plain = dict(zip(failed, guard.probe_all([(base, k) for k in failed]))) if failed else {}
    for (kernels, name), got in zip(targets, ours):
        if got.ok:
            continue
        if not plain[kernels].ok:
            fix = f" Workaround: {XNNPACK_WORKAROUND}." if kernels == Kernels.XNNPACK else ""
            notes.append(f"{name} cannot run this model, and cannot run its plain int8 "
                         f"conversion either, so this is the runtime's limitation, not the "
                         f"plan's: {plain[kernels].reason}.{fix}")
        else:
            notes.append(f"WARNING: {name} runs the plain int8 model but not the planned one: "
                         f"{got.reason}. Please report this as an aa_tflite bug.")
    return notes
