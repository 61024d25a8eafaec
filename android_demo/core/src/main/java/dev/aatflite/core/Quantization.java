package dev.aatflite.core;

/** int8 quantization of inputs and outputs, as the TFLite runtimes and aa_tflite do it. */
public final class Quantization {
  private Quantization() {}

  /**
   * {@code clamp(round_half_even(x / scale) + zeroPoint, -128, 127)}, the same as
   * aa_tflite.runtime.quantize (numpy rounds half to even, as {@link Math#rint} does).
   */
  public static byte[] quantize(float[] x, float scale, int zeroPoint) {
    byte[] out = new byte[x.length];
    for (int i = 0; i < x.length; i++) {
      double q = Math.rint((double) (x[i] / scale)) + zeroPoint;
      out[i] = (byte) Math.max(-128, Math.min(127, q));
    }
    return out;
  }

  /** {@code (q - zeroPoint) * scale}. */
  public static float[] dequantize(byte[] q, float scale, int zeroPoint) {
    float[] out = new float[q.length];
    for (int i = 0; i < q.length; i++) {
      out[i] = (q[i] - zeroPoint) * scale;
    }
    return out;
  }
}
