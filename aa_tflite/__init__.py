"""aa_tflite: fit pretrained Keras ReLU models into a memory budget as int8 TFLite.

Example:
    >>> import aa_tflite
    >>> result = aa_tflite.convert(model, budget_kb=48, representative_data=x_cal,
    ...                            eval_data=(x_val, y_val))  # doctest: +SKIP
    >>> result.save("out/model")  # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from aa_tflite.types import (
    AAError,
    Bits,
    BudgetError,
    Kernels,
    Lowering,
    MemoryMode,
    MemoryReport,
    Plan,
    Site,
    SiteConfig,
    SiteKind,
    TflmArena,
)

# Stages that import TensorFlow load on first use, so ``import aa_tflite.tflite.memory`` (and the
# planner, the flatbuffer reader, the types) stays free of TensorFlow.
_LAZY = {
    "ConvertConfig": "aa_tflite.config",
    "SiteStats": "aa_tflite.search.calibrate", "site_statistics": "aa_tflite.search.calibrate",
    "thresholds_for_sparsity": "aa_tflite.search.calibrate",
    "load_default": "aa_tflite.frontend.embedded",
    "Exported": "aa_tflite.frontend.export", "export": "aa_tflite.frontend.export",
    "to_tflite": "aa_tflite.frontend.export",
    "AAReLU": "aa_tflite.frontend.layers",
    "memory_report": "aa_tflite.tflite.memory", "plan_tensors": "aa_tflite.tflite.memory",
    "tflm_arena": "aa_tflite.tflite.memory",
    "Report": "aa_tflite.conversion", "Result": "aa_tflite.conversion",
    "convert": "aa_tflite.conversion",
    "Rewritten": "aa_tflite.frontend.rewrite", "rewrite": "aa_tflite.frontend.rewrite",
    "evaluate": "aa_tflite.runtime.interpreter", "load_interpreter": "aa_tflite.runtime.interpreter",
    "read_metadata": "aa_tflite.tflite.metadata",
    "OperatingPoints": "aa_tflite.runtime.onthefly", "PointInfo": "aa_tflite.runtime.onthefly",
    "Point": "aa_tflite.conversion",
}

if TYPE_CHECKING:  # pragma: no cover
    from aa_tflite.config import ConvertConfig
    from aa_tflite.conversion import Point, Report, Result, convert
    from aa_tflite.frontend.embedded import load_default
    from aa_tflite.frontend.export import Exported, export, to_tflite
    from aa_tflite.frontend.layers import AAReLU
    from aa_tflite.frontend.rewrite import Rewritten, rewrite
    from aa_tflite.runtime.interpreter import evaluate, load_interpreter
    from aa_tflite.runtime.onthefly import OperatingPoints, PointInfo
    from aa_tflite.search.calibrate import SiteStats, site_statistics, thresholds_for_sparsity
    from aa_tflite.tflite.memory import memory_report, plan_tensors, tflm_arena
    from aa_tflite.tflite.metadata import read_metadata


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'aa_tflite' has no attribute {name!r}")


try:
    __version__ = version("aa-tflite")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

__all__ = [
    "AAError",
    "AAReLU",
    "Bits",
    "BudgetError",
    "ConvertConfig",
    "Exported",
    "Kernels",
    "Lowering",
    "MemoryMode",
    "MemoryReport",
    "OperatingPoints",
    "Plan",
    "Point",
    "PointInfo",
    "Report",
    "Result",
    "Rewritten",
    "Site",
    "SiteConfig",
    "SiteKind",
    "SiteStats",
    "TflmArena",
    "convert",
    "evaluate",
    "export",
    "load_default",
    "load_interpreter",
    "memory_report",
    "plan_tensors",
    "read_metadata",
    "rewrite",
    "site_statistics",
    "tflm_arena",
    "thresholds_for_sparsity",
    "to_tflite",
]
