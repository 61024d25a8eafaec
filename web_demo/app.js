// The browser twin of the Android demo: the same multi-point file (float32 I/O, static batch,
// from `aa-tflite export --target web`), a point selector, the sample digits, and per point the
// predictions and the file's memory figures. window.aa* is what tests/test_web.py drives.
import {loadLiteRt, loadAndCompile, Tensor} from '@litertjs/core';

const assets = new URLSearchParams(location.search).get('assets') || 'assets';
const status = document.getElementById('status');

async function json(name) {
  const r = await fetch(`${assets}/${name}`);
  if (!r.ok) throw new Error(`${assets}/${name}: HTTP ${r.status}`);
  return r.json();
}

async function main() {
  await loadLiteRt('./node_modules/@litertjs/core/wasm/');
  const model = await loadAndCompile(`${assets}/model.tflite`, {accelerator: 'wasm'});
  const meta = await json('metadata.json');
  const info = await json('samples.json');
  const bin = new Float32Array(await (await fetch(`${assets}/samples.bin`)).arrayBuffer());
  const labels = (await (await fetch(`${assets}/labels.txt`)).text()).trim().split('\n');
  const [count, h, w, c] = info.shape;
  const size = h * w * c;
  const points = meta.points;

  async function run(key, i) {
    const input = new Tensor(bin.slice(i * size, (i + 1) * size), [1, h, w, c]);
    const outputs = await model.run(key, [input]);
    const y = Array.from(outputs[0].toTypedArray());
    input.delete();
    outputs.forEach((t) => t.delete());
    return y;
  }

  const select = document.getElementById('point');
  for (const p of points) {
    const o = document.createElement('option');
    o.value = p.signature;
    o.textContent = `${p.signature} (budget ${p.budget_kb} KiB)`;
    select.appendChild(o);
  }

  async function show(key) {
    const p = points.find((q) => q.signature === key);
    const m = p.memory;
    const t0 = performance.now();
    const grid = document.getElementById('grid');
    grid.innerHTML = '';
    let right = 0;
    for (let i = 0; i < count; i++) {
      const y = await run(key, i);
      const top = y.indexOf(Math.max(...y));
      const e = y.map((v) => Math.exp(v - y[top]));
      const conf = 1 / e.reduce((a, b) => a + b, 0);
      const truth = info.labels ? info.labels[i] : null;
      if (truth === top) right++;
      const cell = document.createElement('div');
      cell.className = 'cell' + (truth !== null && truth !== top ? ' wrong' : '');
      const canvas = document.createElement('canvas');
      canvas.width = w; canvas.height = h;
      const ctx = canvas.getContext('2d');
      const img = ctx.createImageData(w, h);
      for (let k = 0; k < h * w; k++) {
        const v = 255 - Math.round(255 * Math.min(1, Math.max(0, bin[i * size + k * c])));
        img.data.set([v, v, v, 255], 4 * k);
      }
      ctx.putImageData(img, 0, 0);
      cell.appendChild(canvas);
      const caption = document.createElement('div');
      caption.textContent = `${labels[top]} (${conf.toFixed(2)})` +
        (truth !== null ? ` label ${truth}` : '');
      cell.appendChild(caption);
      grid.appendChild(cell);
    }
    const ms = (performance.now() - t0) / count;
    document.getElementById('figures').textContent =
      `${key}: packed peak ${m.packed_peak.toLocaleString()} B, ` +
      `TFLM arena ${m.tflm_arena ? m.tflm_arena.toLocaleString() + ' B' : '-'}, ` +
      `${p.scores.metric} ${p.scores.planned.toFixed(4)} (when converted); ` +
      `here ${right}/${count} samples right, ${ms.toFixed(2)} ms per sample.`;
  }

  select.addEventListener('change', () => show(select.value));
  window.aaRun = run;
  window.aaShow = async (key) => { select.value = key; await show(key); };
  window.aaPoints = points.map((p) => p.signature);
  await show(points[0].signature);
  status.textContent = 'Ready: LiteRT.js (WASM, served locally).';
  window.aaReady = true;
}

main().catch((e) => {
  status.textContent = `Error: ${e.message}`;
  window.aaError = String(e.stack || e);
});
