"""Activation scales every runtime can set up: the checks and the repair. No TensorFlow import.

The int8 converter can give a tensor that was (nearly) constant zero on the calibration data a
scale so small that a runtime's fixed-point setup fails or aborts the process. ``scale_problems``
finds such scales, by the rules of LiteRT's and TFLite Micro's int8 kernels; ``repair_scales``
raises them, with every tensor that must share their parameters, and requantizes the biases that
read them. No op or tensor is added.
"""

from __future__ import annotations

from collections.abc import Mapping

from aa_tflite.tflite import flatbuffer
from aa_tflite.tflite.kernel_math import open_model, write_params
from aa_tflite.tflite.ops import SAME_PARAMS, TIED, WEIGHTED, DisjointSets
from aa_tflite.types import AAError

__all__ = ["MIN_ACTIVATION_SCALE", "repair_scales", "rescale_tensors", "scale_problems"]

# A scale below this is a tensor that was (nearly) constant zero on the calibration data; the
# runtimes' fixed-point setup can fail or abort on such scales (e.g. SOFTMAX needs
# beta * scale > 2^-26 in TFLM, fused RELU6 needs scale >= 6 / 2^31).
MIN_ACTIVATION_SCALE = 2.0 ** -23


def _param_groups(ops, tensors) -> dict[int, int]:
    """Activation tensors that must keep equal parameters, as tensor -> group id: the inputs and
    outputs of ops that copy values (pass-through, tied, TFLM's standalone RELU6)."""
    sets = DisjointSets(t.index for t in tensors)
    for op in ops:
        if op.name in SAME_PARAMS or op.name == "RELU6":
            linked = [op.inputs[0], *op.outputs]
        elif op.name in TIED:
            linked = [t for t in (*op.inputs, *op.outputs) if t >= 0 and not tensors[t].is_constant]
        else:
            continue
        sets.join([t for t in linked if t >= 0 and tensors[t].scale])
    return {t.index: sets.find(t.index) for t in tensors}


def _activation_tensors(tensors) -> list:
    return [t for t in tensors if not t.is_constant and t.dtype in ("INT8", "UINT8") and t.scale]


def scale_problems(tflite: bytes) -> list[tuple[int, float, str]]:
    """Activation scales the runtimes cannot set up: ``(tensor, smallest safe scale, why)``.

    The rules come from LiteRT's and TFLite Micro's int8 kernels, where these cases abort the
    process (``ADD``: output scale > largest input scale * 2^-19; ``SOFTMAX``: beta * input scale
    > 2^-26) or fail (fused ``RELU6``: scale >= 6 / 2^31; XNNPACK's conv and fully-connected:
    a requantization multiplier below 256). Any scale below ``MIN_ACTIVATION_SCALE`` is reported
    too.

    Example:
        >>> scale_problems(open("model.tflite", "rb").read())  # doctest: +SKIP
        []
    """
    model = flatbuffer.read(tflite)
    ops, tensors = flatbuffer.describe(model)
    out = []
    for t in _activation_tensors(tensors):
        if t.scale[0] < MIN_ACTIVATION_SCALE:
            out.append((t.index, MIN_ACTIVATION_SCALE,
                        f"scale {t.scale[0]:.3g} (the tensor was ~0 on the calibration data)"))
    for op in ops:
        ins = [tensors[i] for i in op.inputs if i >= 0 and tensors[i].scale]
        if op.name in ("ADD", "SUB", "ADD_N", "CUMSUM") and ins and tensors[op.outputs[0]].scale:
            need = max(t.scale[0] for t in ins) * 2.0 ** -18
            if tensors[op.outputs[0]].scale[0] < need:
                out.append((op.outputs[0], need, f"{op.name} (op {op.index}) output scale below its "
                            "inputs' * 2^-19"))
        if op.name in WEIGHTED and len(ins) >= 2 and tensors[op.outputs[0]].scale:
            need = ins[0].scale[0] * max(ins[1].scale) / 255.0
            if tensors[op.outputs[0]].scale[0] < need:
                out.append((op.outputs[0], need, f"{op.name} (op {op.index}) output scale so "
                            "small that its requantization multiplier reaches 256 (XNNPACK "
                            "refuses the op)"))
        if op.name in ("SOFTMAX", "LOG_SOFTMAX") and ins:
            beta = float(getattr(model.subgraphs[0].operators[op.index].builtinOptions, "beta",
                                 1.0) or 1.0)
            need = 2.0 ** -25 / beta
            if ins[0].scale[0] < need:
                out.append((ins[0].index, need, f"{op.name} (op {op.index}) input scale * beta "
                            "below 2^-26"))
    return out


def rescale_tensors(tflite: bytes, scales: Mapping[int, float]) -> bytes:
    """Gives activation tensors new scales (zero points kept), with every tensor that must share
    their parameters, and requantizes the biases of the weighted ops that read them. No op or
    tensor is added.

    Example:
        >>> fixed = rescale_tensors(tflite, {22: 1e-6})  # doctest: +SKIP
    """
    model, ops, tensors, users = open_model(tflite)
    group = _param_groups(ops, tensors)
    wanted: dict[int, float] = {}
    for t, sc in scales.items():
        wanted[group[t]] = max(wanted.get(group[t], 0.0), float(sc))
    new_params = {t.index: (max(wanted[group[t.index]], t.scale[0]), t.zero_point[0])
                  for t in _activation_tensors(tensors) if group[t.index] in wanted}
    write_params(model, ops, tensors, new_params, {}, {}, {}, users)
    return flatbuffer.write(model)


def repair_scales(tflite: bytes) -> tuple[bytes, list[str]]:
    """Raises the activation scales ``scale_problems`` finds, until there are none.

    Returns:
        The repaired model (``tflite`` itself when nothing was wrong) and one note per repair.

    Raises:
        AAError: The scales could not be repaired.
    """
    notes: list[str] = []
    for _ in range(8):
        problems = scale_problems(tflite)
        if not problems:
            return tflite, notes
        _, tensors = flatbuffer.describe(flatbuffer.read(tflite))
        need: dict[int, float] = {}
        for t, sc, why in problems:
            need[t] = max(need.get(t, 0.0), sc * 1.0001)
            notes.append(f"tensor {t} ({tensors[t].name.split(';')[0][-60:]}): {why}; its scale "
                         f"was raised to {need[t]:.3g} so every runtime can run it")
        tflite = rescale_tensors(tflite, need)
    raise AAError("The int8 model has activation scales the TFLite runtimes cannot set up, and "
                  f"raising them did not settle: {problems[:3]}. Check the model for layers whose "
                  "outputs are constant zero on the representative data.")
