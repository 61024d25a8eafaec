"""Runs Sony's Model Compression Toolkit (MCT) mixed-precision PTQ on one model, inside .venv-mct.

MCT 2.6.1 needs TensorFlow 2.15 (Keras 2), so ``benchmarks/curves.py`` runs this file with
``.venv-mct/bin/python`` (``make mct-env`` creates it). The model is rebuilt from the recipe in
``converters/`` with ``tf.keras`` and gets the trained weights through ``get_weights`` / numpy.

Low-bit activations need a custom target platform: the default IMX500 one offers mixed precision
for weights only. Here every conv, depthwise, dense, add and concatenation (each fused with its
ReLU/ReLU6) may put its activation at any of the bit-widths aa_tflite offers (8, 6, 5, 4, 3, 2,
``BITS``); weights stay 8-bit per channel, as in our int8 TFLite. MCT's model is a
fake-quant Keras model: with any 4-bit activation MCT cannot export a runnable TFLite, so its accuracy
here is measured in simulation. MCT's activation memory is its own figure (the largest cut of the
graph, under the operator order that minimises it), not our TFLM-style packed peak.

Usage: ``python benchmarks/mct_runner.py JOB.json`` where the job names the recipe, the weights
(.npz), the data (.npz with ``x_rep``, ``x_test``, ``y_test``), the fractions of the 8-bit activation
memory to target, and the output JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _builder(name: str):
    import tensorflow as tf

    if name == "digits_cnn":
        from converters.digits_cnn import build
        return build
    if name == "mnist1d_cnn":
        from converters.mnist1d_cnn import build
        return build
    from converters.mini import BUILDERS

    return lambda: BUILDERS[name](tf.keras)


BITS = (8, 6, 5, 4, 3, 2)  # the same menu as aa_tflite's precision table


def _tpc(low_bits: bool):
    from mct_quantizers import QuantizationMethod
    from model_compression_toolkit.target_platform_capabilities.constants import (
        BIAS_ATTR,
        KERNEL_ATTR,
    )
    from model_compression_toolkit.target_platform_capabilities.schema import (
        mct_current_schema as schema,
    )

    off = schema.AttributeQuantizationConfig(
        weights_quantization_method=QuantizationMethod.POWER_OF_TWO, weights_n_bits=8,
        weights_per_channel_threshold=False, enable_weights_quantization=False,
        lut_values_bitwidth=None)
    kernel = schema.AttributeQuantizationConfig(
        weights_quantization_method=QuantizationMethod.SYMMETRIC, weights_n_bits=8,
        weights_per_channel_threshold=True, enable_weights_quantization=True,
        lut_values_bitwidth=None)
    bias = schema.AttributeQuantizationConfig(
        weights_quantization_method=QuantizationMethod.POWER_OF_TWO, weights_n_bits=32,
        weights_per_channel_threshold=False, enable_weights_quantization=False,
        lut_values_bitwidth=None)
    common = dict(activation_quantization_method=QuantizationMethod.POWER_OF_TWO,
                  supported_input_activation_n_bits=BITS, enable_activation_quantization=True,
                  quantization_preserving=False, fixed_scale=None, fixed_zero_point=None,
                  simd_size=32, signedness=schema.Signedness.AUTO)
    plain8 = schema.OpQuantizationConfig(default_weight_attr_config=off,
                                         attr_weights_configs_mapping={}, activation_n_bits=8,
                                         **common)
    linear8 = schema.OpQuantizationConfig(default_weight_attr_config=off,
                                          attr_weights_configs_mapping={KERNEL_ATTR: kernel,
                                                                        BIAS_ATTR: bias},
                                          activation_n_bits=8, **common)

    def options(base):
        configs = [base] + ([base.clone_and_edit(activation_n_bits=b) for b in BITS[1:]]
                            if low_bits else [])
        return schema.QuantizationConfigOptions(quantization_configurations=tuple(configs),
                                                base_config=base)

    default = schema.QuantizationConfigOptions(quantization_configurations=(plain8,))
    preserving = default.clone_and_edit(enable_activation_quantization=False,
                                        quantization_preserving=True)
    names = schema.OperatorSetNames
    sets = [schema.OperatorsSet(name=n, qc_options=preserving)
            for n in (names.MAXPOOL, names.FLATTEN, names.DROPOUT, names.RESHAPE,
                      names.ZERO_PADDING2D, names.PAD)]
    conv = schema.OperatorsSet(name=names.CONV, qc_options=options(linear8))
    conv1d = schema.OperatorsSet(name="Conv1D", qc_options=options(linear8))
    dw = schema.OperatorsSet(name=names.DEPTHWISE_CONV, qc_options=options(linear8))
    fc = schema.OperatorsSet(name=names.FULLY_CONNECTED, qc_options=options(linear8))
    add = schema.OperatorsSet(name=names.ADD, qc_options=options(plain8))
    concat = schema.OperatorsSet(name=names.CONCATENATE, qc_options=options(plain8))
    # The activation of a fused op is the fused ReLU's: that is where the bit choice must be.
    relu = schema.OperatorsSet(name=names.RELU, qc_options=options(plain8))
    relu6 = schema.OperatorsSet(name=names.RELU6, qc_options=options(plain8))
    sets += [conv, conv1d, dw, fc, add, concat, relu, relu6]
    acts = schema.OperatorSetGroup(operators_set=[relu, relu6])
    convs = schema.OperatorSetGroup(operators_set=[conv, conv1d, dw])
    fusing = (schema.Fusing(operator_groups=(convs, acts)),
              schema.Fusing(operator_groups=(fc, acts)),
              schema.Fusing(operator_groups=(add, acts)))
    return schema.TargetPlatformCapabilities(
        default_qco=default, tpc_minor_version=1, tpc_patch_version=0,
        tpc_platform_type="aa_tflite_benchmark", operator_set=tuple(sets),
        fusing_patterns=fusing, name="activation_8_to_2", add_metadata=False, is_simd_padding=False)


def main() -> None:
    import model_compression_toolkit as mct
    import tensorflow as tf
    from model_compression_toolkit import DefaultDict
    from model_compression_toolkit.core.common.quantization.quantization_config import (
        CustomOpsetLayers,
    )
    from model_compression_toolkit.target_platform_capabilities.constants import (
        BIAS_ATTR,
        KERNEL_ATTR,
    )

    with open(sys.argv[1]) as f:
        job = json.load(f)
    tf.keras.utils.set_random_seed(0)
    model = _builder(job["model"])()
    with np.load(job["weights"]) as w:
        model.set_weights([w[f"arr_{i}"] for i in range(len(w.files))])
    with np.load(job["data"]) as d:
        x_rep, x_test, y_test = d["x_rep"], d["x_test"], d["y_test"]

    def rep():
        for i in range(0, len(x_rep), 32):
            yield [x_rep[i:i + 32]]

    def acc(m) -> float:
        return float(np.mean(np.argmax(m.predict(x_test, verbose=0), axis=1) == y_test))

    conv1d = {"Conv1D": CustomOpsetLayers([tf.keras.layers.Conv1D], {
        KERNEL_ATTR: DefaultDict(default_value="kernel"),
        BIAS_ATTR: DefaultDict(default_value="bias")})}

    def core():
        return mct.core.CoreConfig(
            quantization_config=mct.core.QuantizationConfig(custom_tpc_opset_to_layer=conv1d),
            mixed_precision_config=mct.core.MixedPrecisionQuantizationConfig(
                num_of_images=min(len(x_rep), 64)))

    tpc = _tpc(low_bits=True)
    t0 = time.perf_counter()
    ref = mct.core.keras_resource_utilization_data(model, rep, core(),
                                                   target_platform_capabilities=tpc)
    ref_seconds = time.perf_counter() - t0
    int8_model, _ = mct.ptq.keras_post_training_quantization(
        model, rep, core_config=mct.core.CoreConfig(
            quantization_config=mct.core.QuantizationConfig(custom_tpc_opset_to_layer=conv1d)),
        target_platform_capabilities=_tpc(low_bits=False))
    out = {"model": job["model"], "float": acc(model), "int8_sim": acc(int8_model),
           "int8_activation_memory": float(ref.activation_memory),
           "reference_seconds": ref_seconds, "points": []}
    for fraction in job["fractions"]:
        target = mct.core.ResourceUtilization(activation_memory=fraction * ref.activation_memory)
        t0 = time.perf_counter()
        try:
            qmodel, info = mct.ptq.keras_post_training_quantization(
                model, rep, target_resource_utilization=target, core_config=core(),
                target_platform_capabilities=tpc)
        except Exception as e:  # MCT raises plain exceptions when a target is infeasible
            out["points"].append({"fraction": fraction, "error": str(e)[:300],
                                  "seconds": time.perf_counter() - t0})
            continue
        seconds = time.perf_counter() - t0
        final = info.final_resource_utilization
        out["points"].append({
            "fraction": fraction, "seconds": seconds, "accuracy_sim": acc(qmodel),
            "activation_memory": float(final.activation_memory) if final is not None else None,
            "bit_config": [int(b) for b in (info.mixed_precision_cfg or [])]})
    with open(job["out"], "w") as f:
        json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
