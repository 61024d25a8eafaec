package dev.aatflite.demo;

import android.app.Activity;
import android.content.res.AssetFileDescriptor;
import android.graphics.Bitmap;
import android.graphics.Color;
import android.os.Bundle;
import android.view.View;
import android.widget.AdapterView;
import android.widget.ArrayAdapter;
import android.widget.Button;
import android.widget.ImageView;
import android.widget.Spinner;
import android.widget.TextView;
import dev.aatflite.core.OperatingPoint;
import dev.aatflite.core.Prediction;
import dev.aatflite.core.PointTable;
import dev.aatflite.core.Quantization;
import dev.aatflite.core.SampleSet;
import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.MappedByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.tensorflow.lite.Interpreter;
import org.tensorflow.lite.Tensor;

/**
 * The thin Android layer: one Interpreter on the multi-point model, a point selector, the sample
 * digits. Everything else (metadata, selection, quantization, decoding) is in :core, tested
 * with JUnit by `make test`. This file is not compiled in this repository's CI (no Android SDK).
 */
public class MainActivity extends Activity {
  private Interpreter interpreter;
  private PointTable table;
  private SampleSet samples;
  private String point;
  private int index;

  @Override
  protected void onCreate(Bundle state) {
    super.onCreate(state);
    setContentView(R.layout.activity_main);
    try {
      byte[] model = readAsset("model.tflite");
      table = PointTable.fromModel(model);
      samples = SampleSet.read(readAsset("samples.bin"),
          new String(readAsset("samples.json"), StandardCharsets.UTF_8));
      interpreter = new Interpreter(mapAsset("model.tflite"));
    } catch (IOException e) {
      ((TextView) findViewById(R.id.result)).setText("Could not load the assets: " + e);
      return;
    }
    List<String> keys = new ArrayList<>();
    for (OperatingPoint p : table.points()) {
      keys.add(p.key);
    }
    point = keys.get(0);
    Spinner spinner = findViewById(R.id.points);
    spinner.setAdapter(new ArrayAdapter<>(this, android.R.layout.simple_spinner_item, keys));
    spinner.setOnItemSelectedListener(new AdapterView.OnItemSelectedListener() {
      @Override
      public void onItemSelected(AdapterView<?> parent, View view, int pos, long id) {
        point = keys.get(pos);  // switching is naming another signature: no reload
        run();
      }

      @Override
      public void onNothingSelected(AdapterView<?> parent) {}
    });
    Button next = findViewById(R.id.next);
    next.setOnClickListener(v -> {
      index = (index + 1) % samples.count;
      run();
    });
    run();
  }

  private void run() {
    float[] x = samples.sample(index);
    showDigit(x);
    String inName = interpreter.getSignatureInputs(point)[0];
    String outName = interpreter.getSignatureOutputs(point)[0];
    Tensor in = interpreter.getInputTensorFromSignature(inName, point);
    Tensor out = interpreter.getOutputTensorFromSignature(outName, point);
    byte[] q = Quantization.quantize(x, in.quantizationParams().getScale(),
        in.quantizationParams().getZeroPoint());
    byte[][] raw = new byte[1][out.shape()[1]];
    Map<String, Object> inputs = new HashMap<>();
    inputs.put(inName, new byte[][][][] {reshape(q)});
    Map<String, Object> outputs = new HashMap<>();
    outputs.put(outName, raw);
    long t0 = System.nanoTime();
    interpreter.runSignature(inputs, outputs, point);
    double ms = (System.nanoTime() - t0) / 1e6;
    Prediction p = Prediction.fromLogits(Quantization.dequantize(raw[0],
        out.quantizationParams().getScale(), out.quantizationParams().getZeroPoint()));
    String truth = samples.labels == null ? "" : " (label " + samples.labels[index] + ")";
    ((TextView) findViewById(R.id.result)).setText(String.format(Locale.ROOT,
        "Prediction %d%s, confidence %.3f, %.3f ms", p.label, truth, p.confidence, ms));
    ((TextView) findViewById(R.id.figures)).setText(table.get(point).describe());
  }

  private byte[][][] reshape(byte[] q) {
    int h = samples.shape[1], w = samples.shape[2], c = samples.shape[3];
    byte[][][] out = new byte[h][w][c];
    for (int i = 0; i < q.length; i++) {
      out[i / (w * c)][(i / c) % w][i % c] = q[i];
    }
    return out;
  }

  private void showDigit(float[] x) {
    int h = samples.shape[1], w = samples.shape[2];
    Bitmap bmp = Bitmap.createBitmap(w, h, Bitmap.Config.ARGB_8888);
    for (int i = 0; i < h * w; i++) {
      int v = Math.max(0, Math.min(255, Math.round(255 * x[i * samples.shape[3]])));
      bmp.setPixel(i % w, i / w, Color.rgb(255 - v, 255 - v, 255 - v));
    }
    ((ImageView) findViewById(R.id.digit)).setImageBitmap(
        Bitmap.createScaledBitmap(bmp, w * 20, h * 20, false));
  }

  private byte[] readAsset(String name) throws IOException {
    try (InputStream in = getAssets().open(name)) {
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      byte[] buf = new byte[1 << 14];
      for (int n; (n = in.read(buf)) > 0; ) {
        out.write(buf, 0, n);
      }
      return out.toByteArray();
    }
  }

  private MappedByteBuffer mapAsset(String name) throws IOException {
    AssetFileDescriptor fd = getAssets().openFd(name);
    try (FileInputStream in = new FileInputStream(fd.getFileDescriptor())) {
      return in.getChannel().map(FileChannel.MapMode.READ_ONLY, fd.getStartOffset(),
          fd.getDeclaredLength());
    }
  }

  @Override
  protected void onDestroy() {
    if (interpreter != null) {
      interpreter.close();
    }
    super.onDestroy();
  }
}
