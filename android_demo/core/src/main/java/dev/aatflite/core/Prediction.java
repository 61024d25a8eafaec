package dev.aatflite.core;

/** The top class of one output row and its confidence (softmax of the model's logits). */
public final class Prediction {
  public final int label;
  public final float confidence;
  public final float[] probabilities;

  private Prediction(int label, float confidence, float[] probabilities) {
    this.label = label;
    this.confidence = confidence;
    this.probabilities = probabilities;
  }

  /** Decodes logits: softmax (max-subtracted, in double), then the arg max (first on ties). */
  public static Prediction fromLogits(float[] logits) {
    if (logits.length == 0) {
      throw new IllegalArgumentException("Empty output row.");
    }
    double max = Double.NEGATIVE_INFINITY;
    for (float v : logits) {
      max = Math.max(max, v);
    }
    double sum = 0;
    double[] e = new double[logits.length];
    for (int i = 0; i < logits.length; i++) {
      e[i] = Math.exp(logits[i] - max);
      sum += e[i];
    }
    float[] p = new float[logits.length];
    int best = 0;
    for (int i = 0; i < logits.length; i++) {
      p[i] = (float) (e[i] / sum);
      if (logits[i] > logits[best]) {
        best = i;
      }
    }
    return new Prediction(best, p[best], p);
  }
}
