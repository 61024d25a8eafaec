"""Planning on several threads gives the same file as planning on one: options are measured in
any order, and the interpreters' integer kernels do not depend on their thread count."""

import aa_tflite
from aa_tflite.runtime import interpreter
from aa_tflite.search import bench, calibrate, measure


def test_one_thread_and_several_give_the_same_bytes(digits, monkeypatch):
    kw = dict(budget_kb=1.5, representative_data=digits.x_cal,
              eval_data=(digits.x_val[:200], digits.y_val[:200]), progress=False,
              curve_points=2, measure_tflm=False)
    assert interpreter.planning_threads() >= 1
    several = aa_tflite.convert(digits.model, **kw)
    for module in (interpreter, bench, calibrate, measure):
        monkeypatch.setattr(module, "planning_threads", lambda: 1)
    one = aa_tflite.convert(digits.model, **kw)
    assert one.tflite == several.tflite
    assert one.report.sensitivity == several.report.sensitivity
    assert one.report.options_measured == several.report.options_measured > 0
