"""Exports per target: the registry, TensorFlow Lite Micro (C array, arena constant, op resolver
list), the Edge TPU check and the Raspberry Pi files."""

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

import aa_tflite
from aa_tflite.runtime import guard
from aa_tflite.runtime import interpreter as runtime
from aa_tflite.targets import TARGETS, TargetExport, kernels_for
from aa_tflite.targets.tflm import TFLM_MARGIN_MIN, export_tflm, resolver_entries
from aa_tflite.tflite import memory, multipoint, offline_plan
from aa_tflite.tflite.static_batch import static_batch
from aa_tflite.types import AAError, Kernels
from tests.helpers import ROOT, need_pi_env


@pytest.fixture(scope="module")
def multi(digits_points):
    return digits_points


@pytest.fixture(scope="module")
def exported(multi, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflm")
    return export_tflm(multi.tflite, out, name="digits", source="test"), out


def _arrays(source: str) -> dict[str, bytes]:
    found = {}
    for name, body in re.findall(r"const unsigned char (\w+)\[\] = \{(.*?)\};", source, re.S):
        found[name] = bytes(int(v, 16) for v in re.findall(r"0x([0-9a-f]{2})", body))
    return found


def test_one_file_per_point_and_the_bytes_in_the_source_equal_them(exported, multi):
    result, out = exported
    names = sorted(os.listdir(out))
    assert names == ["digits_kib1p2.tflite", "digits_kib1p8.tflite", "digits_kib2p4.tflite",
                     "digits_model_data.cc",
                     "digits_model_data.h"]
    arrays = _arrays((out / "digits_model_data.cc").read_text())
    assert sorted(arrays) == ["g_digits_kib1p2", "g_digits_kib1p8", "g_digits_kib2p4"]
    for p in multi.points:
        data = (out / f"digits_{p.key}.tflite").read_bytes()
        assert arrays[f"g_digits_{p.key}"] == data
        assert f"g_digits_{p.key}_len = {len(data)};" in (out / "digits_model_data.cc").read_text()
        assert multipoint.signature_keys(data) == [p.key]  # one subgraph, its own point
        # the split point runs exactly as the point convert made
        x = np.asarray([[[[0.5]] * 8] * 8], np.float32).repeat(3, 0) * np.arange(3)[:, None,
                                                                                  None, None]
        assert np.array_equal(runtime.run_model(data, x), runtime.run_model(p.tflite, x))


def test_tflm_allocates_and_runs_each_model_with_exactly_the_arena_constant(exported, digits):
    result, out = exported
    header = (out / "digits_model_data.h").read_text()
    arena = int(re.search(r"constexpr size_t kDigitsArenaSize = (\d+);", header).group(1))
    measured = {k: p["tflm_arena"] for k, p in result.points.items()}
    assert arena == result.info["arena_size"] and arena % 16 == 0
    assert arena >= max(measured.values()) + TFLM_MARGIN_MIN
    for key in measured:
        data = (out / f"digits_{key}.tflite").read_bytes()
        done = guard.probe(data, kernels=Kernels.TFLM, tflm_arena_size=arena)
        assert done.ok, done.reason
        tflm = runtime.run_model(data, digits.x_val[:20], kernels="tflm")
        lite = runtime.run_model(data, digits.x_val[:20], kernels="builtin")
        assert np.array_equal(tflm.argmax(1), lite.argmax(1))
        # and TFLM fails below the measured arena: the constant is a real figure
        short = guard.probe(data, kernels=Kernels.TFLM,
                            tflm_arena_size=measured[key] - 64)
        assert not short.ok


def test_the_tflm_export_writes_an_offline_plan_where_the_kernel_library_allows(
        exported, multi, digits, tmp_path):
    """Digits has no overlap safe on every kernel library, so the default export carries no
    plan; for TFLM's reference kernels the plan shrinks each point's real arena, the file runs
    in exactly that arena (not 64 B less) and computes what the unplanned point does."""
    default, _ = exported
    assert all(p["plan_saves"] == 0 for p in default.points.values())
    assert all(offline_plan.read_offline_plan(open(p["file"], "rb").read()) is None
               for p in default.points.values())
    done = export_tflm(multi.tflite, tmp_path, name="digits", library="reference")
    x = digits.x_val[:30]
    for point in multi.points:
        got = done.points[point.key]
        data = open(got["file"], "rb").read()
        assert offline_plan.read_offline_plan(data) is not None and got["plan_saves"] > 0
        assert got["tflm_arena"] < default.points[point.key]["tflm_arena"]
        assert guard.probe(data, kernels=Kernels.TFLM, tflm_arena_size=got["tflm_arena"]).ok
        assert not guard.probe(data, kernels=Kernels.TFLM,
                               tflm_arena_size=got["tflm_arena"] - 64).ok
        assert np.array_equal(runtime.run_model(data, x, kernels="tflm"),
                              runtime.run_model(point.tflite, x, kernels="tflm"))
    assert any("offline plan saves" in line for line in done.lines)
    with pytest.raises(AAError, match="library must be"):
        export_tflm(multi.tflite, tmp_path / "bad", library="arm")


def test_the_op_resolver_list_names_exactly_the_kernels_used(exported, multi):
    result, out = exported
    ops = result.info["ops"]
    assert list(ops) == resolver_entries((out / f"digits_{multi.points[0].key}.tflite")
                                         .read_bytes())
    # Fixed at batch 1, Flatten's SHAPE -> STRIDED_SLICE -> PACK is folded into a constant.
    assert set(ops) == {"AddConv2D", "AddFullyConnected", "AddMaxPool2D", "AddReshape"}
    assert {"AddShape", "AddStridedSlice", "AddPack"} <= set(
        resolver_entries(multi.points[0].tflite))
    header = (out / "digits_model_data.h").read_text()
    assert f"constexpr int kDigitsOpCount = {len(ops)};" in header
    assert [p["c_array"] for p in result.points.values()] == [
        "g_digits_kib2p4", "g_digits_kib1p8", "g_digits_kib1p2"]
    assert result.lines[-1].startswith(f"Arena constant: {result.info['arena_size']:,} B")


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
def test_the_generated_header_and_source_compile_and_register_the_ops(exported, tmp_path):
    result, out = exported
    ops, arena = result.info["ops"], result.info["arena_size"]
    main = tmp_path / "main.cc"
    main.write_text('#include <cstdio>\n#include "digits_model_data.h"\n'
                    "struct Fake { int n = 0;\n"
                    + "".join(f"  int {op}() {{ printf(\"{op}\\n\"); ++n; return 0; }}\n"
                              for op in sorted(ops))
                    + "};\nint main() { Fake f; bool ok = RegisterDigitsOps(f);\n"
                      "  printf(\"%d %d %zu %u\\n\", ok, f.n, kDigitsArenaSize, "
                      "g_digits_kib1p2_len);\n  return f.n == kDigitsOpCount ? 0 : 1; }\n")
    exe = tmp_path / "main"
    done = subprocess.run(["g++", "-std=c++17", "-I", str(out), str(main),
                           str(out / "digits_model_data.cc"), "-o", str(exe)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0
    lines = ran.stdout.split()
    assert lines[:len(ops)] == sorted(ops)
    size = len((out / "digits_kib1p2.tflite").read_bytes())
    assert lines[len(ops):] == ["1", str(len(ops)), str(arena), str(size)]


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler")
def test_firmware_switches_points_in_one_arena(exported, tmp_path):
    """The header's point table and SelectDigitsPoint compile with g++ against the exported
    sources and rebuild the interpreter for any point, in any order, in the one arena (TFLM's
    C++ library is not installed here: the interpreter is a stand-in that records what it got);
    and the Python TFLM interpreter runs every point in exactly that arena size, in any order."""
    result, out = exported
    arena = result.info["arena_size"]
    main = tmp_path / "switch.cc"
    main.write_text(
        '#include <cstdio>\n#include "digits_model_data.h"\n'
        "static int live = 0;\n"
        "struct Interp { const unsigned char* m; unsigned char* a; size_t n;\n"
        "  Interp(const unsigned char* m, int, unsigned char* a, size_t n) : m(m), a(a), n(n)"
        " { ++live; }\n  ~Interp() { --live; } };\n"
        "const unsigned char* Get(const unsigned char* m) { return m; }\n"
        "int main() { alignas(16) static unsigned char arena[kDigitsArenaSize];\n"
        "  alignas(Interp) static unsigned char storage[sizeof(Interp)];\n"
        "  Interp* it = nullptr; int order[] = {2, 0, 1, 2, 0};\n"
        "  for (int p : order) { it = SelectDigitsPoint<Interp>(p, storage, it, Get, 0, arena);\n"
        "    if (it == nullptr || it->m != kDigitsPoints[p].model || it->a != arena ||\n"
        "        it->n != kDigitsArenaSize || live != 1 || kDigitsPoints[p].arena > it->n)"
        " return 1;\n"
        '    printf("%s %zu\\n", kDigitsPoints[p].key, kDigitsPoints[p].arena); }\n'
        "  return SelectDigitsPoint<Interp>(3, storage, it, Get, 0, arena) == nullptr"
        " && live == 1 ? 0 : 2; }\n")
    exe = tmp_path / "switch"
    done = subprocess.run(["g++", "-std=c++17", "-Wall", "-Werror", "-I", str(out), str(main),
                           str(out / "digits_model_data.cc"), "-o", str(exe)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ran = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0, ran.stdout
    keys = list(result.points)
    assert ran.stdout.split()[0::2] == [keys[p] for p in (2, 0, 1, 2, 0)]
    assert [int(v) for v in ran.stdout.split()[1::2]] == [
        result.points[keys[p]]["tflm_arena"] for p in (2, 0, 1, 2, 0)]
    from tflite_micro import runtime as tflm

    x = np.zeros((1, 8, 8, 1), np.int8)
    for p in (1, 2, 0, 0, 2):
        data = (out / f"digits_{keys[p]}.tflite").read_bytes()
        interp = tflm.Interpreter.from_bytes(data, arena_size=arena)
        interp.set_input(x, 0)
        interp.invoke()


def test_a_single_point_file_exports_as_one_model(digits, tmp_path):
    single = aa_tflite.convert(digits.model, budget_kb=1.8, representative_data=digits.x_cal,
                               progress=False, curve_points=0)
    result = export_tflm(single.tflite, tmp_path, name="digits")
    assert sorted(os.listdir(tmp_path)) == ["digits.tflite", "digits_model_data.cc",
                                           "digits_model_data.h"]
    # The file is the point fixed at batch 1 (its Flatten's shape ops folded): the same
    # outputs, a smaller TFLM arena than the one convert measured on the batch-agnostic file.
    assert (tmp_path / "digits.tflite").read_bytes() == static_batch(single.tflite)
    x = digits.x_val[:40]
    fixed = (tmp_path / "digits.tflite").read_bytes()
    for kernels in ("builtin", "tflm"):
        assert np.array_equal(runtime.run_model(fixed, x, kernels=kernels),
                              runtime.run_model(single.tflite, x, kernels=kernels))
    stock = single.report.planned_memory.tflm.total
    arena = [p["tflm_arena"] for p in result.points.values()]
    assert arena == [memory.tflm_arena(fixed).total] and arena[0] < stock  # 320 B less here


def test_split_refuses_an_unknown_point(multi):
    with pytest.raises(AAError, match="No point 'nope'"):
        multipoint.split(multi.tflite, "nope")


def test_cli_export_tflm(multi, tmp_path, capsys):
    from aa_tflite import cli

    model = tmp_path / "digits.tflite"
    model.write_bytes(multi.tflite)
    assert cli.main(cli.parse_args(["export", str(model), "--target", "tflm", "--out",
                                    str(tmp_path / "fw")])) == 0
    out = capsys.readouterr().out
    assert "point kib1p2: TFLM arena" in out and "AddConv2D" in out
    assert (tmp_path / "fw" / "digits_model_data.h").exists()
    assert cli.main(cli.parse_args(["export", str(tmp_path / "missing.tflite"), "--target",
                                    "tflm", "--out", str(tmp_path / "fw")])) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(cli.parse_args(["export", str(model), "--target", "tflm", "--out",
                                    str(tmp_path / "ref"), "--library", "reference"])) == 0
    assert "offline plan saves" in capsys.readouterr().out
    assert cli.main(cli.parse_args(["export", str(model), "--target", "pi", "--out",
                                    str(tmp_path / "pi"), "--library", "reference"])) == 2
    assert "apply to --target tflm only" in capsys.readouterr().err


def test_edgetpu_check_finds_the_first_cpu_fallback(multi, tmp_path):
    from aa_tflite.targets.edgetpu import check_edgetpu, export_edgetpu
    from aa_tflite.targets.web import web_model

    done = export_edgetpu(multi.tflite, tmp_path, name="digits")
    assert sorted(os.path.basename(p) for p in done.files) == [
        "digits_kib1p2.tflite", "digits_kib1p8.tflite", "digits_kib2p4.tflite"]
    for key, point in done.points.items():
        check = point["check"]
        names = [name for _, name, _, _ in check.ops]
        # Flatten lowers to SHAPE/STRIDED_SLICE/PACK/RESHAPE, and SHAPE is not an Edge TPU op;
        # fixed at batch 1, the export folds them, so the whole graph maps.
        assert "SHAPE" not in names and check.first_fallback is None
        assert all(ok for _, _, ok, _ in check.ops)
        assert check.summary().startswith(f"{len(names)} of {len(names)} ops would map")
        assert check_edgetpu(multipoint.split(multi.tflite, key)).first_fallback == 4  # SHAPE
        assert check.problems == ()  # static shapes after the export, 8-bit tensors
        assert f"point {key}:" in done.lines
        if shutil.which("edgetpu_compiler") is None:  # compiled: the next test
            assert point["compiler_log"] == "" and done.info["compiler"] is None
            assert "  edgetpu_compiler: not installed here; run it on an x86-64 Debian host " \
                   "with Coral's apt repository" in done.lines
    for path in done.files:
        data = open(path, "rb").read()
        model = flatbuffer_read(data)
        assert len(model.subgraphs) == 1
        assert all(int(d) > 0 for t in model.subgraphs[0].tensors
                   for d in (t.shapeSignature if t.shapeSignature is not None else []))
    # the multi-point file itself is refused: one subgraph per compiled model
    with pytest.raises(AAError, match="one subgraph"):
        check_edgetpu(multi.tflite)
    # a float tensor is named as such
    web = multipoint.split(web_model(multi.tflite), multi.points[0].key)
    check = check_edgetpu(web)
    assert check.problems == ()
    dequantize = [k for k, name, _, _ in check.ops if name == "DEQUANTIZE"]
    assert dequantize and not check.ops[dequantize[0]][2]


def test_edgetpu_compiler_compiles_each_point_when_installed(multi, tmp_path):
    """With ``edgetpu_compiler`` on the PATH each point is compiled and its log kept; it is not
    installable on this machine (x86-64 Debian with Coral's apt repository only)."""
    compiler = shutil.which("edgetpu_compiler")
    if compiler is None:
        pytest.skip("edgetpu_compiler is not installed (Coral's apt repository)")
    done = TARGETS["edgetpu"].export(multi.tflite, tmp_path, name="digits")
    assert done.info["compiler"] == compiler
    for key, point in done.points.items():
        assert "Model compiled successfully" in point["compiler_log"], key
        assert (tmp_path / f"digits_{key}_edgetpu.tflite").exists()


def flatbuffer_read(data):
    from aa_tflite.tflite import flatbuffer

    return flatbuffer.read(data)


def test_the_registry_names_each_target_its_kernels_and_its_module():
    assert sorted(TARGETS) == ["android", "edgetpu", "pi", "tflm", "web"]
    assert {k: kernels_for(k) for k in TARGETS} == {
        "android": Kernels.XNNPACK, "edgetpu": Kernels.BUILTIN, "pi": Kernels.XNNPACK,
        "tflm": Kernels.TFLM, "web": Kernels.XNNPACK}
    assert kernels_for(None) == Kernels.BUILTIN
    with pytest.raises(AAError, match=r"target must be one of \['android', 'edgetpu', 'pi', "
                                      r"'tflm', 'web'\] \(or None\)\. Received: target='phone'"):
        kernels_for("phone")
    for name, target in TARGETS.items():
        assert target.name == name and target.description and "\n" not in target.description
        module = __import__(target.module, fromlist=["export"])
        assert callable(module.export), name


@pytest.mark.parametrize("name", ["tflm", "pi", "edgetpu"])
def test_every_target_returns_one_exported_record(name, multi, tmp_path):
    done = TARGETS[name].export(multi.tflite, tmp_path / name, name="digits", source="test")
    assert isinstance(done, TargetExport) and done.target == name
    assert list(done.points) == [p.key for p in multi.points]
    assert done.lines and all(isinstance(line, str) and "\n" not in line for line in done.lines)
    assert all(os.path.isfile(f) for f in done.files)
    with pytest.raises(TypeError):
        done.points[multi.points[0].key]["file"] = "elsewhere"  # read-only


def test_pi_export_writes_one_file_per_point_and_the_multi_point_file(multi, tmp_path):
    done = TARGETS["pi"].export(multi.tflite, tmp_path, name="digits")
    assert sorted(os.listdir(tmp_path)) == ["digits.tflite", "digits_kib1p2.tflite",
                                           "digits_kib1p8.tflite", "digits_kib2p4.tflite"]
    assert (tmp_path / "digits.tflite").read_bytes() == multi.tflite
    assert done.info["combined"] == str(tmp_path / "digits.tflite")
    for p in multi.points:
        data = open(done.points[p.key]["file"], "rb").read()
        assert data == multipoint.split(multi.tflite, p.key)
        assert multipoint.signature_keys(data) == [p.key]
    assert "OperatingPoints" in done.lines[-1]


_PI_SCRIPT = """
import json, sys
import numpy as np
from aa_tflite.runtime.onthefly import OperatingPoints
x = np.load(sys.argv[-1])["x"]
out = {}
for path in sys.argv[1:-1]:
    points = OperatingPoints(path, kernels="builtin")
    out[path] = points.run(x).tolist()
print(json.dumps(out))
"""


def _on_tflite_runtime(files: list[str], x: np.ndarray, tmp_path) -> dict[str, np.ndarray]:
    """Each file's outputs on ``x`` in tflite-runtime 2.14 (``.venv-pi``), builtin kernels."""
    pi = need_pi_env()
    np.savez(tmp_path / "x.npz", x=x)
    done = subprocess.run([pi, "-c", _PI_SCRIPT, *files, str(tmp_path / "x.npz")],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return {path: np.asarray(v, np.float32) for path, v in got.items()}


@pytest.mark.pi
def test_tflm_exports_run_on_tflite_runtime_2_14(exported, digits, tmp_path):
    result, out = exported
    files = [str(out / f"digits_{k}.tflite") for k in result.points]
    x = digits.x_val[:12]
    got = _on_tflite_runtime(files, x, tmp_path)
    from aa_tflite.runtime.onthefly import OperatingPoints

    for path in files:
        want = OperatingPoints(path, kernels="builtin").run(x)
        assert np.array_equal(got[path], want), path


@pytest.mark.pi
def test_planned_split_and_patched_files_compute_the_unplanned_outputs_on_tflite_runtime(
        multi, digits, tmp_path):
    """tflite-runtime ignores the offline plan and runs the rewrites: planned (reference
    overlaps) digits points, a split MobileNetV2-style file and a patched, reordered, planned
    one give the original int8 files' outputs."""
    from aa_tflite.runtime.onthefly import OperatingPoints
    from tests.conftest import FIXTURES, fixture_bytes

    planned = export_tflm(multi.tflite, tmp_path / "d", name="digits", library="reference")
    mobile = fixture_bytes("mobile_int8.tflite")
    split = export_tflm(mobile, tmp_path / "m", name="m", split=True)
    (split_point,) = split.points.values()
    assert "AddConcatenation" in split.info["ops"]
    cases = {planned.points[p.key]["file"]: (p.tflite, digits.x_val[:12]) for p in multi.points}
    mobile_x = np.load(f"{FIXTURES}/mobile_cal.npz")["x"].astype(np.float32)[:12]
    cases[split_point["file"]] = (mobile, mobile_x)
    from aa_tflite.tflite.offline_plan import plan_offsets, write_offline_plan
    from aa_tflite.tflite.patches import patch_stage
    from aa_tflite.tflite.reorder import list_schedule, reorder

    tiled = patch_stage(mobile, at=3, grid=(2, 2))  # patched, reordered, planned
    tiled = reorder(tiled, list_schedule(tiled, peak_first=True))
    (tmp_path / "tiled.tflite").write_bytes(write_offline_plan(
        tiled, plan_offsets(tiled, in_place="auto")[0], overlaps="auto"))
    cases[str(tmp_path / "tiled.tflite")] = (mobile, mobile_x)
    assert all(offline_plan.read_offline_plan(open(planned.points[p.key]["file"], "rb").read())
               is not None for p in multi.points)
    for path, (original, x) in cases.items():
        got = _on_tflite_runtime([path], x, tmp_path)
        want = OperatingPoints(original, kernels="builtin").run(x)
        assert np.array_equal(got[path], want), path


@pytest.mark.parametrize("name", ["aa_tflite.targets", "aa_tflite.targets.common"])
def test_the_registry_and_helper_examples_run(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_the_tflm_export_splits_channels_on_request_and_stays_exact(tmp_path):
    """The committed MobileNetV2-style fixture: its stride-2 expand -> depthwise pair holds the
    peak, so --split-channels lowers the arena the header states; every output is unchanged."""
    from tests.conftest import FIXTURES, fixture_bytes

    mobile = fixture_bytes("mobile_int8.tflite")
    x = np.load(f"{FIXTURES}/mobile_cal.npz")["x"].astype(np.float32)[:8]
    plain = export_tflm(mobile, tmp_path / "plain", name="m")
    split = export_tflm(mobile, tmp_path / "split", name="m", split=True)
    (a,), (b,) = plain.points.values(), split.points.values()
    assert b["tflm_arena"] < a["tflm_arena"] and split.info["arena_size"] < plain.info["arena_size"]
    data = open(b["file"], "rb").read()
    assert "AddConcatenation" in split.info["ops"] and "AddConcatenation" not in plain.info["ops"]
    for kernels in ("tflm", "builtin"):
        assert np.array_equal(runtime.run_model(data, x, kernels=kernels),
                              runtime.run_model(mobile, x, kernels=kernels))
    assert guard.probe(data, kernels=Kernels.TFLM, tflm_arena_size=b["tflm_arena"]).ok
    assert not guard.probe(data, kernels=Kernels.TFLM, tflm_arena_size=b["tflm_arena"] - 64).ok
