"""Input-size operating points: the same model rebuilt at another square input size, and the
data resized to it (bilinear with antialiasing, ``tf.image.resize``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from aa_tflite.types import AAError

__all__ = ["at_size", "check_image_model", "resize", "resize_eval"]


def check_image_model(model: Any) -> None:
    """Raises an ``AAError`` unless ``model`` takes (height, width, channels) images."""
    shape = tuple(model.inputs[0].shape) if getattr(model, "inputs", None) else ()
    if len(shape) != 4:
        raise AAError(f"input_sizes needs an image model with (height, width, channels) inputs; "
                      f"this model's input is {shape}.")


def at_size(model: Any, size: int) -> Any:
    """The same model, weights shared by value, built for ``size`` x ``size`` inputs.

    Raises:
        AAError: A layer cannot take the new shape (e.g. a Flatten before a Dense).
    """
    import keras

    from aa_tflite.frontend.rewrite import from_keras2, is_keras2

    if is_keras2(model):
        model = from_keras2(model)
    channels = model.inputs[0].shape[-1]
    try:
        inp = keras.Input((size, size, channels), name=model.inputs[0].name.split(":")[0])
        clone = keras.models.clone_model(model, input_tensors=inp)
        clone.set_weights(model.get_weights())
        clone(np.zeros((1, size, size, channels), np.float32))
    except Exception as e:  # Keras raises many types when a layer cannot take the new shape
        raise AAError(f"The model cannot run at {size}x{size}: {type(e).__name__}: "
                      f"{str(e)[:200]}. input_sizes needs a model that is fully convolutional "
                      "up to a global pooling (no Flatten before a Dense).") from e
    return clone


def resize(x: Any, size: int) -> np.ndarray:
    """Images resized to ``size`` x ``size``: bilinear with antialiasing (``tf.image.resize``)."""
    import tensorflow as tf

    x = np.asarray(x, np.float32)
    if x.ndim != 4:
        raise AAError(f"input_sizes needs image data shaped (N, height, width, channels). "
                      f"Received: {x.shape}.")
    if x.shape[1:3] == (size, size):
        return x
    return tf.image.resize(x, (size, size), method="bilinear", antialias=True).numpy()


def resize_eval(eval_data: Any, size: int) -> Any:
    """``eval_data`` (None, ``x`` or ``(x, y)``) with its inputs resized."""
    if eval_data is None:
        return None
    if isinstance(eval_data, tuple):
        return (resize(eval_data[0], size), *eval_data[1:])
    return resize(eval_data, size)
