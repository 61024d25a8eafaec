"""The Keras side (needs TensorFlow): the AA-ReLU layer, the rewrite, the int8 export, resizing
and the embedded default model. Only ``aa_tflite.conversion`` and the CLI import this package."""
