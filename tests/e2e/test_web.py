"""The browser demo (web_demo/) on LiteRT.js in headless Chromium, driven by playwright-core:
every point's outputs equal the Python runtime's within 1e-5, switching points in any order."""

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading

import numpy as np
import pytest

from aa_tflite.runtime.onthefly import OperatingPoints
from aa_tflite.targets.web import export_web, web_model
from tests.helpers import ROOT, need

WEB = os.path.join(ROOT, "web_demo")
SAMPLES = 6


def _need_browser() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    missing = [what for what, ok in (
        ("chromium", chromium), ("node", shutil.which("node")),
        ("web_demo/node_modules", os.path.isdir(os.path.join(WEB, "node_modules", "@litertjs"))))
        if not ok]
    need(f"{', '.join(missing)} missing; `make web-env` installs them" if missing else "")
    return chromium


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves web_demo/, with /fixture/ mapped to the test's exported assets."""

    fixture = ""

    def translate_path(self, path):
        if path.startswith("/fixture/"):
            return os.path.join(self.fixture, path[len("/fixture/"):].split("?")[0])
        return super().translate_path(path)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def multi(digits_points):
    return digits_points


def test_the_web_model_runs_every_point_exactly_as_the_int8_file(multi, digits):
    web = web_model(multi.tflite)
    x = digits.x_val[:40]
    a = OperatingPoints(web, kernels="xnnpack")
    b = OperatingPoints(multi.tflite, kernels="xnnpack")
    for p in multi.points:
        assert np.array_equal(a.run(x, point=p.key), b.run(x, point=p.key))
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=web)
    for p in multi.points:
        (detail,) = interp.get_signature_runner(p.key).get_input_details().values()
        assert detail["dtype"] == np.float32 and list(detail["shape_signature"]) == [1, 8, 8, 1]


def test_browser_demo_matches_python_on_every_point(multi, digits, tmp_path):
    chromium = _need_browser()
    assets = tmp_path / "assets"
    x, y = digits.x_val[-16:], digits.y_val[-16:]
    export_web(multi.tflite, assets, samples_x=x, samples_y=y)
    handler = functools.partial(type("H", (_Handler,), {"fixture": str(assets)}), directory=WEB)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html?assets=fixture"
        out, shot = tmp_path / "out.json", tmp_path / "web_demo.png"
        done = subprocess.run(["node", os.path.join(WEB, "drive.mjs"), url, chromium, str(out),
                               str(shot), str(SAMPLES)], capture_output=True, text=True,
                              timeout=600, cwd=WEB)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["error"] is None, got["error"]
    assert got["external"] == []  # nothing fetched from outside localhost
    keys = [p.key for p in multi.points]
    assert got["order"] == keys + keys[::-1]
    expected = OperatingPoints(web_model(multi.tflite), kernels="xnnpack")
    for key in keys:
        want = expected.run(x[:SAMPLES], point=key)
        assert np.max(np.abs(np.asarray(got["outputs"][key], np.float32) - want)) <= 1e-5, key
    assert shot.stat().st_size > 10_000
    target = os.environ.get("AA_TFLITE_SCREENSHOT")
    if target:  # refresh the README's screenshot: AA_TFLITE_SCREENSHOT=docs/web_demo.png
        shutil.copy(shot, os.path.join(ROOT, target))


def test_cli_export_web_writes_a_float_io_model(multi, tmp_path, capsys):
    from aa_tflite import cli
    from aa_tflite.tflite.metadata import read_metadata

    model = tmp_path / "digits.tflite"
    model.write_bytes(multi.tflite)
    assert cli.main(cli.parse_args(["export", str(model), "--target", "web", "--out",
                                    str(tmp_path / "web")])) == 0
    assert "web assets: 3 points" in capsys.readouterr().out
    web = (tmp_path / "web" / "model.tflite").read_bytes()
    assert web == web_model(multi.tflite)
    assert read_metadata(web) == read_metadata(multi.tflite)
