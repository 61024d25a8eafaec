"""What a Raspberry Pi imports (numpy and an interpreter; no TensorFlow, no LiteRT schema): making
interpreters, batched runs, the child-process guard and ``OperatingPoints``.

Example:
    >>> from aa_tflite.runtime import OperatingPoints
    >>> points = OperatingPoints("out/digits.tflite")  # doctest: +SKIP
"""

from aa_tflite.runtime.interpreter import evaluate, load_interpreter, make_interpreter
from aa_tflite.runtime.onthefly import OperatingPoints, PointInfo

__all__ = ["OperatingPoints", "PointInfo", "evaluate", "load_interpreter", "make_interpreter"]
