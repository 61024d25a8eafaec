package dev.aatflite.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertThrows;
import static org.junit.Assert.assertTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import java.util.Map;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * The demo's core against what Python computed for the same exported assets.
 *
 * <p>The fixture folder (system property {@code aatflite.fixtures}) holds what
 * {@code aa-tflite export --target android} wrote, plus {@code expected.json}: the point table,
 * selections, quantized inputs and the raw int8 outputs LiteRT gave per point, with the top-1
 * and confidence Python decoded from them. {@code tests/test_android.py} writes it and runs this.
 */
public class CoreTest {
  private static Path dir;
  private static byte[] model;
  private static Map<String, Object> expected;

  @BeforeClass
  @SuppressWarnings("unchecked")
  public static void load() throws IOException {
    String where = System.getProperty("aatflite.fixtures");
    assertTrue("set -Daatflite.fixtures to an exported assets folder", where != null);
    dir = Paths.get(where);
    model = Files.readAllBytes(dir.resolve("model.tflite"));
    expected = (Map<String, Object>) Json.parse(read("expected.json"));
  }

  private static String read(String name) throws IOException {
    return new String(Files.readAllBytes(dir.resolve(name)), StandardCharsets.UTF_8);
  }

  @SuppressWarnings("unchecked")
  private static List<Object> list(Object o) {
    return (List<Object>) o;
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> map(Object o) {
    return (Map<String, Object>) o;
  }

  @Test
  public void metadataInTheModelEqualsTheExportedJson() throws IOException {
    Object fromModel = Json.parse(TfliteMetadata.read(model));
    assertEquals(Json.parse(read("metadata.json")), fromModel);
  }

  @Test
  public void pointTableMatchesPython() {
    PointTable table = PointTable.fromModel(model);
    List<Object> want = list(expected.get("points"));
    assertEquals(want.size(), table.points().size());
    for (int i = 0; i < want.size(); i++) {
      Map<String, Object> w = map(want.get(i));
      OperatingPoint p = table.points().get(i);
      assertEquals(w.get("key"), p.key);
      assertEquals((Double) w.get("budget_kb"), p.budgetKb);
      assertEquals(Math.round((Double) w.get("packed")), (long) p.packedBytes);
      assertEquals(Math.round((Double) w.get("tflm_arena")), (long) p.tflmArenaBytes);
      assertEquals((Double) w.get("score"), p.score, 0.0);
      assertTrue(p.describe().startsWith(p.key + ": packed peak "));
    }
    assertThrows(IllegalArgumentException.class, () -> table.get("nope"));
  }

  @Test
  public void selectionMatchesPython() {
    PointTable table = PointTable.fromModel(model);
    for (Object o : list(expected.get("select"))) {
      Map<String, Object> c = map(o);
      OperatingPoint got = table.select((Double) c.get("budget_kb"), (Double) c.get("min_score"));
      if (c.get("key") == null) {
        assertNull(got);
      } else {
        assertEquals(c.get("key"), got.key);
      }
    }
  }

  @Test
  public void samplesAndQuantizedInputsMatchPython() throws IOException {
    SampleSet samples = SampleSet.read(Files.readAllBytes(dir.resolve("samples.bin")),
        read("samples.json"));
    Map<String, Object> in = map(expected.get("input"));
    float scale = ((Double) in.get("scale")).floatValue();
    int zero = ((Double) in.get("zero_point")).intValue();
    List<Object> want = list(expected.get("quantized"));
    assertTrue(want.size() > 0);
    for (int i = 0; i < want.size(); i++) {
      List<Object> row = list(want.get(i));
      byte[] w = new byte[row.size()];
      for (int k = 0; k < w.length; k++) {
        w[k] = (byte) ((Double) row.get(k)).intValue();
      }
      assertArrayEquals(w, Quantization.quantize(samples.sample(i), scale, zero));
    }
    List<Object> labels = list(expected.get("labels"));
    for (int i = 0; i < labels.size(); i++) {
      assertEquals(((Double) labels.get(i)).intValue(), samples.labels[i]);
    }
  }

  @Test
  public void decodedOutputsMatchPython() {
    Map<String, Object> out = map(expected.get("output"));
    float scale = ((Double) out.get("scale")).floatValue();
    int zero = ((Double) out.get("zero_point")).intValue();
    Map<String, Object> raw = map(expected.get("raw_outputs"));
    assertTrue(raw.size() > 1);
    for (Map.Entry<String, Object> e : raw.entrySet()) {
      List<Object> rows = list(e.getValue());
      List<Object> top1 = list(map(expected.get("top1")).get(e.getKey()));
      List<Object> conf = list(map(expected.get("confidence")).get(e.getKey()));
      for (int i = 0; i < rows.size(); i++) {
        List<Object> r = list(rows.get(i));
        byte[] q = new byte[r.size()];
        for (int k = 0; k < q.length; k++) {
          q[k] = (byte) ((Double) r.get(k)).intValue();
        }
        Prediction p = Prediction.fromLogits(Quantization.dequantize(q, scale, zero));
        assertEquals(((Double) top1.get(i)).intValue(), p.label);
        assertEquals((Double) conf.get(i), p.confidence, 1e-6);
      }
    }
  }

  @Test
  public void badInputIsRefusedClearly() {
    assertThrows(IllegalArgumentException.class, () -> TfliteMetadata.read(new byte[16]));
    assertThrows(IllegalArgumentException.class, () -> Json.parse("{\"a\": }"));
    assertThrows(IllegalArgumentException.class,
        () -> SampleSet.read(new byte[12], "{\"shape\": [1, 2, 2, 1]}"));
  }
}
