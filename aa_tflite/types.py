"""Shared records and enums: the vocabulary every subpackage speaks. No import beyond the
standard library.

All records are frozen dataclasses; every choice is a str-valued ``Enum`` so it serialises as itself.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "AAError",
    "Bits",
    "BudgetError",
    "FloorTensor",
    "Kernels",
    "Lowering",
    "MemoryMode",
    "MemoryReport",
    "Plan",
    "PLAN_SCHEMA_VERSION",
    "Site",
    "SiteConfig",
    "SiteKind",
    "TensorMemory",
    "ThresholdForm",
    "TflmArena",
    "check_sites",
]

PLAN_SCHEMA_VERSION = 1


class AAError(ValueError):
    """Bad input to aa_tflite. The message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class FloorTensor:
    """A tensor live where no plan gets below the budget, and why it cannot shrink.

    Attributes:
        tensor: Its index in subgraph 0.
        name: Its name (the last 60 characters).
        shape: Its shape.
        nbytes: What it costs at the floor.
        why: Why no option makes it smaller, in words.
    """

    tensor: int
    name: str
    shape: tuple[int, ...]
    nbytes: int
    why: str


class BudgetError(AAError):
    """The memory budget cannot be met. Carries the smallest reachable figure and its plan.

    Attributes:
        smallest_bytes: The smallest activation memory any plan reaches, in bytes.
        plan: A plan that reaches it (site name -> ``SiteConfig``), or None.
        tensors: The tensors live at that floor, each with why it cannot shrink (empty when
            the floor was not analysed).
    """

    def __init__(self, message: str, *, smallest_bytes: int | None = None,
                 plan: Mapping[str, Any] | None = None,
                 tensors: tuple[FloorTensor, ...] = ()) -> None:
        super().__init__(message)
        self.smallest_bytes = smallest_bytes
        self.plan = plan
        self.tensors = tuple(tensors)


class Bits(int, enum.Enum):
    """Activation bit-width of a site. Below 8, an int8 tensor held to ``2^bits`` levels
    (``aa_tflite.precision`` has the table)."""

    INT8 = 8
    INT6 = 6
    INT5 = 5
    INT4 = 4
    INT3 = 3
    INT2 = 2


class ThresholdForm(str, enum.Enum):
    """How a threshold is written into the TFLite graph (``Plan.lowering``).

    ``SHIFT`` computes ``max(x - T, 0)``: the zeros are the same as the exact form's, the kept values
    are lowered by ``T``. The converter folds ``- T`` into the producer's bias, so it costs no op and
    no tensor after a Conv/Dense/Depthwise producer. ``EXACT`` computes ``x * (x >= T)``, which
    TFLite writes as ``GREATER_EQUAL`` + ``SELECT_V2``: one bool and one int8 tensor more.
    """

    SHIFT = "shift"
    EXACT = "exact"


# The name the public API has always had; "lowering" elsewhere means a ``aa_tflite.lowering`` form.
Lowering = ThresholdForm


class Kernels(str, enum.Enum):
    """Which kernels run a model.

    ``BUILTIN`` is LiteRT's builtin kernels without delegates (the default for measuring when no
    target is named), ``XNNPACK`` is LiteRT's default (builtin + the XNNPACK delegate, what Android
    apps and ``tflite-runtime`` users get), ``TFLM`` is the TensorFlow Lite Micro reference
    kernels.
    """

    BUILTIN = "builtin"
    XNNPACK = "xnnpack"
    TFLM = "tflm"


class MemoryMode(str, enum.Enum):
    """What a memory figure means; see README "Where the savings are real"."""

    PACKED = "packed"
    PACKED_SPARSE = "packed+sparse"
    TFLM = "tflm"


class SiteKind(str, enum.Enum):
    """What the rewritten ReLU was in the user's model."""

    RELU_LAYER = "relu_layer"  # keras.layers.ReLU
    ACTIVATION = "activation"  # keras.layers.Activation("relu"/"relu6")
    FUSED = "fused"  # activation="relu" inside Conv/Dense/...


@dataclasses.dataclass(frozen=True)
class Site:
    """One ReLU site of a rewritten model.

    Attributes:
        name: Stable name, ``"/"``-joined path of nested model names and the AAReLU layer name.
            Plans are keyed by it.
        kind: What the site was before the rewrite.
        source_layer: Name of the user's layer that held the ReLU.
        native_clip: The upper bound the user's model already had (6.0 for ReLU6), or None.
    """

    name: str
    kind: SiteKind
    source_layer: str
    native_clip: float | None = None


@dataclasses.dataclass(frozen=True)
class SiteConfig:
    """The per-site controls.

    Attributes:
        threshold: Outputs for inputs below it become 0. ``0`` is a plain ReLU.
        clip: Upper bound of the site's stored output, or None for the site's native bound.
            With the default ``shift`` lowering the output is ``min(max(x - T, 0), clip)``. For a
            site below 8 bits, None means "chosen from the data": one clip per channel where the
            graph allows it (``aa_tflite.convert``), else one for the tensor.
        bits: Activation bit-width.
    """

    threshold: float = 0.0
    clip: float | None = None
    bits: Bits = Bits.INT8

    def __post_init__(self) -> None:
        if not math.isfinite(self.threshold) or self.threshold < 0:
            raise AAError(f"SiteConfig.threshold must be a finite number >= 0. "
                          f"Received: threshold={self.threshold}")
        if self.clip is not None and (not math.isfinite(self.clip) or self.clip <= 0):
            raise AAError(f"SiteConfig.clip must be a finite number above 0, or None. "
                          f"Received: clip={self.clip}")
        try:
            object.__setattr__(self, "bits", Bits(int(self.bits)))
        except (TypeError, ValueError) as e:
            raise AAError(f"SiteConfig.bits must be one of {[int(b) for b in Bits]}. "
                          f"Received: bits={self.bits!r}") from e

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "clip": self.clip, "bits": int(self.bits)}

    def label(self) -> str:
        """A short name for messages, e.g. ``"4b T=0.12"``.

        Example:
            >>> SiteConfig(threshold=0.125, bits=4).label()
            '4b T=0.125'
        """
        return f"{int(self.bits)}b" + (f" T={self.threshold:.3g}" if self.threshold else "")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SiteConfig:
        return cls(threshold=float(d.get("threshold", 0.0)),
                   clip=None if d.get("clip") is None else float(d["clip"]),
                   bits=int(d.get("bits", 8)))


@dataclasses.dataclass(frozen=True)
class Plan:
    """Per-site configs keyed by site name (never by position), plus how thresholds are lowered.

    Example:
        >>> plan = Plan({"conv2d_relu": SiteConfig(threshold=0.1)})
        >>> Plan.from_json(plan.to_json()) == plan
        True
    """

    sites: Mapping[str, SiteConfig] = dataclasses.field(default_factory=dict)
    lowering: ThresholdForm = ThresholdForm.SHIFT

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", dict(sorted(self.sites.items())))
        object.__setattr__(self, "lowering", ThresholdForm(self.lowering))

    def get(self, site: str) -> SiteConfig:
        return self.sites.get(site, SiteConfig())

    def __hash__(self) -> int:
        return hash((tuple(self.sites.items()), self.lowering))

    def to_json(self) -> str:
        return json.dumps({"schema_version": PLAN_SCHEMA_VERSION, "lowering": self.lowering.value,
                           "sites": {k: v.to_dict() for k, v in self.sites.items()}},
                          indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise AAError(f"The plan file is not valid JSON ({e}). Pass a file written by "
                          f"Plan.to_json or Result.save.") from e
        version = d.get("schema_version", 1) if isinstance(d, dict) else None
        if not isinstance(d, dict) or not isinstance(d.get("sites", {}), dict):
            raise AAError("A plan is a JSON object with a 'sites' object keyed by site name. "
                          f"Received: {type(d).__name__}")
        if version > PLAN_SCHEMA_VERSION:
            raise AAError(f"This plan has schema_version {version}, newer than this aa_tflite "
                          f"understands ({PLAN_SCHEMA_VERSION}). Upgrade aa-tflite.")
        return cls({k: SiteConfig.from_dict(v) for k, v in d.get("sites", {}).items()},
                   lowering=ThresholdForm(d.get("lowering", "shift")))


@dataclasses.dataclass(frozen=True)
class TensorMemory:
    """One planned activation tensor."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    bits: int
    nbytes: int
    first: int  # allocation scope it is created in (0 = before the first op)
    last: int  # allocation scope of its last use
    offset: int  # where the greedy planner put it


@dataclasses.dataclass(frozen=True)
class TflmArena:
    """The arena stock TFLite Micro allocates, read from its recording allocator."""

    total: int
    head: int  # the planned, non-persistent activation buffers
    tail: int  # persistent: tensor structs, per-channel quantisation data, op data


@dataclasses.dataclass(frozen=True)
class MemoryReport:
    """The memory figures of one ``.tflite``, side by side, in bytes."""

    packed_peak: int
    int8_peak: int
    tflm: TflmArena | None
    weights: int
    file_size: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_sites(names: Iterable[str], known: Iterable[str], what: str) -> None:
    """Raises when ``names`` has a site that is not in ``known``: the one unknown-site check.

    Example:
        >>> check_sites(["conv1_relu"], {"conv1_relu": 14}, "The plan")
        >>> check_sites(["nope"], ["conv1_relu"], "The plan")
        Traceback (most recent call last):
        ...
        aa_tflite.types.AAError: The plan names sites this model does not have: ['nope']. ...

    Args:
        names: The sites asked for (a plan's, an edit's).
        known: The model's sites.
        what: What asked for them, as the start of a sentence, e.g. ``"The plan"``.

    Raises:
        AAError: Some of ``names`` are unknown; the message lists them and the known sites.
    """
    known = sorted(known)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise AAError(f"{what} names sites this model does not have: {unknown}. Its sites are: "
                      f"{known}.")
