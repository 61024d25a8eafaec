package dev.aatflite.core;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.List;
import java.util.Map;

/** The sample inputs {@code aa-tflite export --target android} writes (samples.bin + .json). */
public final class SampleSet {
  public final int count;
  public final int[] shape;
  public final int[] labels;
  private final float[] data;
  private final int size;

  private SampleSet(int[] shape, float[] data, int[] labels) {
    this.shape = shape;
    this.count = shape[0];
    this.data = data;
    this.labels = labels;
    int n = 1;
    for (int i = 1; i < shape.length; i++) {
      n *= shape[i];
    }
    this.size = n;
  }

  /** Reads {@code samples.bin} (float32, little-endian) with its {@code samples.json}. */
  @SuppressWarnings("unchecked")
  public static SampleSet read(byte[] bin, String json) {
    Map<String, Object> doc = (Map<String, Object>) Json.parse(json);
    List<Object> dims = (List<Object>) doc.get("shape");
    int[] shape = new int[dims.size()];
    long n = 1;
    for (int i = 0; i < shape.length; i++) {
      shape[i] = ((Double) dims.get(i)).intValue();
      n *= shape[i];
    }
    if (bin.length != 4 * n) {
      throw new IllegalArgumentException("samples.bin holds " + bin.length + " bytes; its shape "
          + "needs " + 4 * n + ". Export the samples again.");
    }
    float[] data = new float[(int) n];
    ByteBuffer.wrap(bin).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(data);
    int[] labels = null;
    if (doc.get("labels") instanceof List) {
      List<Object> l = (List<Object>) doc.get("labels");
      labels = new int[l.size()];
      for (int i = 0; i < labels.length; i++) {
        labels[i] = ((Double) l.get(i)).intValue();
      }
    }
    return new SampleSet(shape, data, labels);
  }

  /** Sample {@code i}, flattened (H x W x C). */
  public float[] sample(int i) {
    float[] out = new float[size];
    System.arraycopy(data, i * size, out, 0, size);
    return out;
  }
}
