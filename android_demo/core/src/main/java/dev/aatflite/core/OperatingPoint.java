package dev.aatflite.core;

import java.util.Map;

/** One operating point as the file's metadata describes it (figures may be null if unknown). */
public final class OperatingPoint {
  public final String key;
  public final Double budgetKb;
  public final Integer inputSize;
  public final Long packedBytes;
  public final Long packedSparseBytes;
  public final Long tflmArenaBytes;
  public final Long weightsBytes;
  public final Double score;
  public final String metric;
  public final int lowBitTensors;

  OperatingPoint(Map<String, Object> entry) {
    key = (String) entry.get("signature");
    budgetKb = (Double) entry.get("budget_kb");
    inputSize = entry.get("input_size") == null
        ? null : ((Double) entry.get("input_size")).intValue();
    Map<?, ?> memory = map(entry.get("memory"));
    Map<?, ?> scores = map(entry.get("scores"));
    packedBytes = whole(memory.get("packed_peak"));
    packedSparseBytes = whole(memory.get("packed_sparse_peak"));
    tflmArenaBytes = whole(memory.get("tflm_arena"));
    weightsBytes = whole(memory.get("weights"));
    score = (Double) scores.get("planned");
    metric = (String) scores.get("metric");
    lowBitTensors = map(entry.get("tensor_bits")).size();
  }

  private static Map<?, ?> map(Object o) {
    return o instanceof Map ? (Map<?, ?>) o : java.util.Collections.emptyMap();
  }

  private static Long whole(Object o) {
    return o == null ? null : Math.round((Double) o);
  }

  /** One line for the app's figures panel. */
  public String describe() {
    StringBuilder s = new StringBuilder(key);
    if (packedBytes != null) {
      s.append(String.format(java.util.Locale.ROOT, ": packed peak %,d B", packedBytes));
    }
    if (tflmArenaBytes != null) {
      s.append(String.format(java.util.Locale.ROOT, ", TFLM arena %,d B", tflmArenaBytes));
    }
    if (score != null) {
      s.append(String.format(java.util.Locale.ROOT, ", %s %.4f", metric, score));
    }
    return s.toString();
  }
}
