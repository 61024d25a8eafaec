"""The ``.tflite`` side (the LiteRT schema, no TensorFlow): reading and writing flatbuffers, op
tables, the kernels' arithmetic, site analysis, scale safety, memory layout, metadata and
multi-point files."""
