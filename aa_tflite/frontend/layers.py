"""The AA-ReLU Keras layer: a ReLU with a threshold and an optional upper clip."""

from __future__ import annotations

import math
from typing import Any

import keras

from aa_tflite.types import Lowering

__all__ = ["AAReLU"]


@keras.saving.register_keras_serializable(package="aa_tflite")
class AAReLU(keras.layers.Layer):
    """Thresholded ReLU with an optional clip ("AA-ReLU").

    Formula:
    ``` python
    # lowering="shift" (the default; costs nothing at run time in TFLite)
    f(x) = min(max(x - threshold, 0), clip)
    # lowering="exact"
    f(x) = min(x, clip) if x >= threshold else 0
    ```
    Both forms give zeros for the same inputs, so the same sparsity. With ``threshold=0`` and
    ``clip=None`` both are exactly ``keras.layers.ReLU()``; with ``clip=6``, ``ReLU(max_value=6)``.

    Example:
    >>> layer = AAReLU(threshold=0.5, lowering="exact")
    >>> [float(v) for v in layer(keras.ops.convert_to_tensor([-1.0, 0.2, 0.5, 2.0]))]
    [0.0, 0.0, 0.5, 2.0]

    Args:
        threshold: Inputs below it give 0. Must be >= 0. Defaults to ``0.0``.
        clip: Upper bound of the output, or None for no bound. Must be above ``threshold``.
            Defaults to ``None``.
        lowering: ``"shift"`` or ``"exact"``; see the formula. Defaults to ``"shift"``.
        **kwargs: Base layer keyword arguments, such as ``name`` and ``dtype``.
    """

    def __init__(self, threshold: float = 0.0, clip: float | None = None,
                 lowering: str = "shift", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(threshold, (int, float)) or not math.isfinite(threshold) or threshold < 0:
            raise ValueError("The threshold of AAReLU must be a finite number >= 0. "
                             f"Received: threshold={threshold}")
        if clip is not None and (not isinstance(clip, (int, float)) or not math.isfinite(clip)
                                 or clip <= threshold):
            raise ValueError("The clip of AAReLU must be a finite number above the threshold "
                             f"({threshold}), or None. Received: clip={clip}")
        try:
            lowering = Lowering(lowering).value
        except ValueError:
            raise ValueError("The lowering of AAReLU must be 'shift' or 'exact'. "
                             f"Received: lowering={lowering!r}") from None
        self.threshold = float(threshold)
        self.clip = None if clip is None else float(clip)
        self.lowering = lowering
        self.supports_masking = True
        self.built = True

    def call(self, inputs):
        if self.threshold == 0.0:  # the identity case: exactly keras.layers.ReLU
            return keras.activations.relu(inputs, max_value=self.clip)
        if self.lowering == Lowering.SHIFT.value:
            return keras.activations.relu(inputs - self.threshold, max_value=self.clip)
        kept = inputs if self.clip is None else keras.ops.minimum(inputs, self.clip)
        return keras.ops.where(inputs >= self.threshold, kept, keras.ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"threshold": self.threshold, "clip": self.clip, "lowering": self.lowering})
        return config
