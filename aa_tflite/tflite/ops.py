"""What the int8 kernels do with their inputs' quantization parameters: op tables and graph
helpers shared by the analysis, the scale checks, the lowerings and the metadata. No TensorFlow
import.

The tables were read from LiteRT's and TFLite Micro's int8 kernels.

Example:
    >>> "MAX_POOL_2D" in SAME_PARAMS and "CONV_2D" in WEIGHTED
    True
    >>> sets = DisjointSets([1, 2, 3])
    >>> sets.union(3, 1)
    >>> sets.find(3) == sets.find(1) != sets.find(2)
    True
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

from ai_edge_litert import schema_py_generated as schema

from aa_tflite.tflite.flatbuffer import OpInfo

__all__ = ["ACTIVATION_RANGE", "CLAMPING", "JOINING", "SAME_PARAMS", "SHAPE_ONLY", "TIED",
           "WEIGHTED", "DisjointSets", "consumers", "model_outputs", "opcode_index", "producers"]

# Ops with an int8 kernel (input 1) and an int32 bias (input 2) that requantize their output.
WEIGHTED = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"})
# Ops whose int8 kernels copy or pick input values without requantizing, in LiteRT and in TFLite
# Micro (read from both runtimes' kernels; several check input and output params are equal,
# e.g. REDUCE_MAX, EXPAND_DIMS, BATCH_TO_SPACE_ND, pooling in TFLM): output params = input's.
SAME_PARAMS = frozenset({
    "MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "STRIDED_SLICE",
    "SLICE", "PAD", "TRANSPOSE", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "GATHER", "GATHER_ND",
    "SPLIT", "SPLIT_V", "REDUCE_MAX", "REDUCE_MIN", "BATCH_TO_SPACE_ND", "SPACE_TO_BATCH_ND",
    "MIRROR_PAD", "TILE", "BROADCAST_TO", "REVERSE_V2", "RESIZE_NEAREST_NEIGHBOR",
    "RESIZE_BILINEAR", "UNPACK"})
# Ops that need one scale on several inputs (checked, or implied by a raw pick between inputs).
TIED = frozenset({"CONCATENATION", "PACK", "PADV2", "MAXIMUM", "MINIMUM", "SELECT", "SELECT_V2",
                  "DYNAMIC_UPDATE_SLICE", "ADD_N", "FILL"})
# The tied ops whose output is their inputs side by side, at the one scale they share.
JOINING = frozenset({"CONCATENATION", "PACK"})
SHAPE_ONLY = frozenset({"SHAPE"})  # read a tensor's shape, not its values
CLAMPING = frozenset({"RELU", "RELU6"})  # activations that clamp below at zero
# The real-valued range a fused activation, or the standalone op of the same name, clamps its
# output to (None: no bound on that side).
ACTIVATION_RANGE: dict[str, tuple[float | None, float | None]] = {
    "RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0),
    "RELU_0_TO_1": (0.0, 1.0)}


def consumers(ops: Iterable[OpInfo]) -> dict[int, list[tuple[OpInfo, int]]]:
    """Tensor -> the ``(op, input position)`` pairs that read it, in execution order.

    Example:
        >>> op = OpInfo(0, "ADD", (3, 3), (4,), "NONE")
        >>> consumers([op])[3] == [(op, 0), (op, 1)]
        True
    """
    out: dict[int, list[tuple[OpInfo, int]]] = {}
    for op in ops:
        for pos, t in enumerate(op.inputs):
            if t >= 0:
                out.setdefault(t, []).append((op, pos))
    return out


def producers(ops: Iterable[OpInfo]) -> dict[int, OpInfo]:
    """Tensor -> the op that writes it."""
    return {t: op for op in ops for t in op.outputs}


def model_outputs(model: schema.ModelT) -> set[int]:
    """The tensors subgraph 0 returns."""
    outputs = model.subgraphs[0].outputs
    return {int(t) for t in (outputs if outputs is not None else [])}


class DisjointSets:
    """Union-find over hashable items, with path halving."""

    def __init__(self, items: Iterable[Hashable]) -> None:
        self._parent = {x: x for x in items}

    def find(self, x: Hashable) -> Hashable:
        """The representative of ``x``'s set."""
        parent = self._parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, x: Hashable, into: Hashable) -> None:
        """Merges ``x``'s set into ``into``'s (whose representative stays)."""
        self._parent[self.find(x)] = self.find(into)

    def join(self, items: Sequence[Hashable]) -> None:
        """Merges the sets of all ``items`` into the first one's."""
        for x in items[1:]:
            self.union(x, items[0])


def opcode_index(model: schema.ModelT, builtin_code: int, version: int = 1) -> int:
    """The index of ``builtin_code``'s entry in ``model.operatorCodes``, added (at ``version``)
    when the model has none. Builtin codes above 127 are stored as the schema asks: the deprecated
    field holds 127 (``PLACEHOLDER_FOR_GREATER_OP_CODES``).

    Example:
        >>> from ai_edge_litert import schema_py_generated as schema
        >>> model = schema.ModelT()
        >>> model.operatorCodes = []
        >>> opcode_index(model, schema.BuiltinOperator.RELU, 2), len(model.operatorCodes)
        (0, 1)
        >>> opcode_index(model, schema.BuiltinOperator.RELU), len(model.operatorCodes)
        (0, 1)
    """
    for k, oc in enumerate(model.operatorCodes):
        if max(oc.builtinCode, oc.deprecatedBuiltinCode) == builtin_code:
            return k
    oc = schema.OperatorCodeT()
    oc.builtinCode, oc.deprecatedBuiltinCode = builtin_code, min(builtin_code, 127)
    oc.version = version
    model.operatorCodes.append(oc)
    return len(model.operatorCodes) - 1
