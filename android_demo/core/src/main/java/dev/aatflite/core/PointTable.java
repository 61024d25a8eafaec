package dev.aatflite.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/** The operating points of a multi-point {@code .tflite}, and the choice between them. */
public final class PointTable {
  private final List<OperatingPoint> points;

  private PointTable(List<OperatingPoint> points) {
    this.points = Collections.unmodifiableList(points);
  }

  /** Reads the points from a model's bytes (its {@code aa_tflite} metadata). */
  public static PointTable fromModel(byte[] model) {
    String json = TfliteMetadata.read(model);
    if (json == null) {
      throw new IllegalArgumentException("This .tflite has no aa_tflite metadata; convert it "
          + "with aa_tflite.convert(budget_kb=[...]).");
    }
    return fromMetadata(json);
  }

  /** Reads the points from the metadata's JSON text. */
  @SuppressWarnings("unchecked")
  public static PointTable fromMetadata(String json) {
    Object doc = Json.parse(json);
    if (!(doc instanceof Map)) {
      throw new IllegalArgumentException("The aa_tflite metadata is not a JSON object.");
    }
    Object list = ((Map<String, Object>) doc).get("points");
    List<OperatingPoint> out = new ArrayList<>();
    if (list instanceof List) {
      for (Object e : (List<Object>) list) {
        out.add(new OperatingPoint((Map<String, Object>) e));
      }
    }
    if (out.isEmpty()) {
      throw new IllegalArgumentException("The aa_tflite metadata lists no points.");
    }
    return new PointTable(out);
  }

  public List<OperatingPoint> points() {
    return points;
  }

  /** The point named {@code key}; the exception lists the keys if there is none. */
  public OperatingPoint get(String key) {
    for (OperatingPoint p : points) {
      if (p.key.equals(key)) {
        return p;
      }
    }
    List<String> keys = new ArrayList<>();
    for (OperatingPoint p : points) {
      keys.add(p.key);
    }
    throw new IllegalArgumentException("No point '" + key + "'. Its points: " + keys);
  }

  /**
   * The best point that fits: the highest score among points whose packed peak is within
   * {@code budgetKb} (if given) and whose score is at least {@code minScore} (if given); ties
   * go to the smaller packed peak. The same rule as Python's {@code OperatingPoints.select}.
   * Returns null if none fits.
   */
  public OperatingPoint select(Double budgetKb, Double minScore) {
    OperatingPoint best = null;
    for (OperatingPoint p : points) {
      if (budgetKb != null && (p.packedBytes == null || p.packedBytes > budgetKb * 1024)) {
        continue;
      }
      if (minScore != null && (p.score == null || p.score < minScore)) {
        continue;
      }
      if (best == null || better(p, best)) {
        best = p;
      }
    }
    return best;
  }

  private static boolean better(OperatingPoint a, OperatingPoint b) {
    double sa = a.score == null ? Double.NEGATIVE_INFINITY : a.score;
    double sb = b.score == null ? Double.NEGATIVE_INFINITY : b.score;
    if (sa != sb) {
      return sa > sb;
    }
    long pa = a.packedBytes == null ? 0 : a.packedBytes;
    long pb = b.packedBytes == null ? 0 : b.packedBytes;
    return pa < pb;
  }
}
