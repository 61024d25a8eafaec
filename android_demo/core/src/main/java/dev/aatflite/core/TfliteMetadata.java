package dev.aatflite.core;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

/**
 * Reads the {@code aa_tflite} metadata (a JSON document) out of a {@code .tflite} flatbuffer,
 * with no TFLite library: only Model.buffers and Model.metadata are walked.
 */
public final class TfliteMetadata {
  public static final String NAME = "aa_tflite";

  private TfliteMetadata() {}

  /** The metadata's JSON text, or null if the file has none. */
  public static String read(byte[] model) {
    if (model.length < 8 || model[4] != 'T' || model[5] != 'F' || model[6] != 'L'
        || model[7] != '3') {
      throw new IllegalArgumentException("Not a .tflite file (no 'TFL3' identifier).");
    }
    ByteBuffer b = ByteBuffer.wrap(model).order(ByteOrder.LITTLE_ENDIAN);
    try {
      int root = b.getInt(0);
      int[] buffers = tables(b, field(b, root, 4));
      for (int entry : tables(b, field(b, root, 6))) {
        int nameAt = field(b, entry, 0);
        if (nameAt < 0 || !NAME.equals(string(b, nameAt))) {
          continue;
        }
        int bufferAt = field(b, entry, 1);
        int index = bufferAt < 0 ? 0 : b.getInt(bufferAt);
        int dataAt = field(b, buffers[index], 0);
        if (dataAt < 0) {
          return null;
        }
        int start = dataAt + b.getInt(dataAt);
        int n = b.getInt(start);
        return new String(model, start + 4, n, StandardCharsets.UTF_8);
      }
      return null;
    } catch (IndexOutOfBoundsException e) {
      throw new IllegalArgumentException("This .tflite is damaged: its metadata cannot be read.");
    }
  }

  private static int field(ByteBuffer b, int table, int index) {
    int vtable = table - b.getInt(table);
    int size = b.getShort(vtable) & 0xffff;
    if (4 + 2 * index >= size) {
      return -1;
    }
    int off = b.getShort(vtable + 4 + 2 * index) & 0xffff;
    return off == 0 ? -1 : table + off;
  }

  private static int[] tables(ByteBuffer b, int at) {
    if (at < 0) {
      return new int[0];
    }
    int start = at + b.getInt(at);
    int n = b.getInt(start);
    int[] out = new int[n];
    for (int k = 0; k < n; k++) {
      int slot = start + 4 + 4 * k;
      out[k] = slot + b.getInt(slot);
    }
    return out;
  }

  private static String string(ByteBuffer b, int at) {
    int start = at + b.getInt(at);
    int n = b.getInt(start);
    byte[] bytes = new byte[n];
    for (int k = 0; k < n; k++) {
      bytes[k] = b.get(start + 4 + k);
    }
    return new String(bytes, StandardCharsets.UTF_8);
  }
}
