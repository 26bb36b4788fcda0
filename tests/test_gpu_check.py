"""bench/gpu_check.py and bench/gpu_pack.py on the CPU: the prepared GPU check (issue 17) must work before a GPU is lent.

`gpu_check.py --device cpu --quick` runs every step of the check in a reduced form (small data and sizes, a tiny CNN
where bf16/fp16 convolutions would take minutes on a CPU, one lesson), through the same bootstrap the GPU run uses
(`--wheels`: install packed wheels into a temporary folder, offline, then run from it; here a one-module wheel made
by the test). The test reads the JSON it writes and checks what each step measured, not only that it ran.

fastai's side of the speed and GPU-busy steps runs when fastai is installed in bench/.fastai (the benchmarks install
it there); otherwise the check must record it as skipped, saying it is not installed, and the test checks that this
is the reason (fastai is not a test dependency: it needs 60 MB of wheels from PyPI).

The packing's download side needs PyPI, so only its commands are checked here (`--dry-run`); its install side runs.
"""
import json, os, subprocess, sys, zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK, PACK = ROOT / "bench" / "gpu_check.py", ROOT / "bench" / "gpu_pack.py"
FASTAI_DIR = ROOT / "bench" / ".fastai"


def _env():
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_WAIT_POLICY="PASSIVE")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _tiny_wheels(folder: Path, python: str) -> Path:
    "A packed folder as gpu_pack.py writes it, holding one tiny pure-Python wheel, for `python` (e.g. '3.11')."
    (folder / "check").mkdir(parents=True)
    whl = folder / "check" / "lk_tiny_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("lk_tiny_probe/__init__.py", "VALUE = 42\n")
        z.writestr("lk_tiny_probe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: lk-tiny-probe\nVersion: 1.0\n")
        z.writestr("lk_tiny_probe-1.0.dist-info/WHEEL",
                   "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("lk_tiny_probe-1.0.dist-info/RECORD", "lk_tiny_probe/__init__.py,,\nlk_tiny_probe-1.0.dist-info/METADATA,,\n"
                   "lk_tiny_probe-1.0.dist-info/WHEEL,,\nlk_tiny_probe-1.0.dist-info/RECORD,,\n")
    (folder / "manifest.json").write_text(json.dumps({"python_version": python, "groups": {"check": [whl.name]}}))
    return folder


HERE_PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def test_pack_installs_offline_into_a_folder(tmp_path):
    wheels = _tiny_wheels(tmp_path / "wheels", HERE_PY)
    r = subprocess.run([sys.executable, str(PACK), "install", "--wheels", str(wheels), "--target", str(tmp_path / "site")],
                       capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    probe = subprocess.run([sys.executable, "-c", "import lk_tiny_probe as m; print(m.VALUE, m.__file__)"],
                           capture_output=True, text=True, env=dict(_env(), PYTHONPATH=str(tmp_path / "site" / "check")))
    value, where = probe.stdout.split()
    assert value == "42" and where.startswith(str(tmp_path / "site" / "check")), probe


def test_pack_refuses_wheels_for_another_python(tmp_path):
    wheels = _tiny_wheels(tmp_path / "wheels", "3.99")
    r = subprocess.run([sys.executable, str(PACK), "install", "--wheels", str(wheels), "--target", str(tmp_path / "site")],
                       capture_output=True, text=True, env=_env())
    assert r.returncode != 0
    assert f"packed for Python 3.99, but this is Python {HERE_PY}" in r.stderr, r.stderr
    assert f"--python-version {HERE_PY}" in r.stderr, r.stderr  # says how to re-pack
    assert not (tmp_path / "site" / "check" / "lk_tiny_probe").exists()
    r = subprocess.run([sys.executable, str(PACK), "install", "--wheels", str(tmp_path), "--target", str(tmp_path / "s")],
                       capture_output=True, text=True, env=_env())
    assert r.returncode != 0 and "manifest.json is missing" in r.stderr, r.stderr


def test_pack_download_commands():
    r = subprocess.run([sys.executable, str(PACK), "download", "--dry-run", "--python-version", "3.12"],
                       capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    lines = dict(l.split(": ", 1) for l in r.stdout.strip().splitlines())
    assert set(lines) == {"check", "fastai"}
    for cmd in lines.values():
        for part in ("pip download", "--no-deps", "--only-binary=:all:", "--python-version 3.12", "manylinux2014_x86_64"):
            assert part in cmd, (part, cmd)
    for pkg in ("nbdev==2.4.14", "execnb==", "fastcore==1.", "ipython==", "ipywidgets==", "traitlets=="):
        assert pkg in lines["check"], pkg
    assert "fastai==2.8" in lines["fastai"] and "fastcore==2." in lines["fastai"]
    assert "scipy" not in lines["fastai"] and "pandas" not in lines["fastai"]  # left to the GPU machine (too big)
    r = subprocess.run([sys.executable, str(PACK), "download", "--dry-run", "--python-version", "3"],
                       capture_output=True, text=True, env=_env())
    assert r.returncode != 0 and "must look like 3.12" in r.stderr


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    "One --quick CPU run of the whole check, through the --wheels bootstrap."
    tmp = tmp_path_factory.mktemp("gpu_check")
    wheels = _tiny_wheels(tmp / "wheels", HERE_PY)
    out = tmp / "gpu_check.json"
    r = subprocess.run([sys.executable, str(CHECK), "--wheels", str(wheels), "--device", "cpu", "--quick", "--out", str(out)],
                       capture_output=True, text=True, env=_env(), cwd=tmp, timeout=1500)
    assert out.exists(), f"no results file\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-5000:]}"
    return r, json.loads(out.read_text())


def _fastai_installed() -> bool: return (FASTAI_DIR / "fastai").is_dir()


def test_quick_run_passes_every_step(quick_run):
    r, res = quick_run
    steps = res["steps"]
    assert list(steps) == ["env", "mixed_precision", "channels_last", "augment_on_device", "checkpoint_resume",
                           "export_to_cpu", "lessons", "speed", "gpu_busy"]
    bad = {n: s.get("failed_checks") or s.get("error") for n, s in steps.items() if s["ok"] is not True}
    assert not bad, f"{bad}\n{r.stdout[-3000:]}"
    assert r.returncode == 0 and res["summary"]["failed"] == [] and res["summary"]["skipped"] == []
    # one progress line per step, and the JSON summary last
    progress = [l for l in r.stdout.splitlines() if l.startswith("[")]
    assert [l.split("]")[0] for l in progress] == [f"[{i}/9" for i in range(1, 10)], progress
    assert json.loads(r.stdout.strip().splitlines()[-1])["ok"] == 9


def test_quick_run_bootstrap_and_env(quick_run):
    _, res = quick_run
    env = res["steps"]["env"]
    assert env["device"] == "cpu" and env["cuda_available"] in (True, False)
    installed = env["installed_from_wheels"]
    assert installed["groups"]["check"] == ["lk_tiny_probe-1.0.dist-info"]  # the bootstrap installed the packed wheel
    assert all("error" not in m for m in env["modules"].values()), env["modules"]


def test_quick_run_correctness_steps(quick_run):
    _, res = quick_run
    s = res["steps"]
    mp = s["mixed_precision"]
    for mode, dtype in (("off", "torch.float32"), ("bf16", "torch.bfloat16"), ("fp16", "torch.float16")):
        losses = mp[mode]["epoch_train_loss"]
        assert losses[-1] < 0.95 * losses[0], (mode, losses)  # learning happened in every precision
        assert mp[mode]["output_dtypes"] == [dtype] and mp[mode]["param_dtypes"] == ["torch.float32"]
    assert mp["fp16"]["scaler_enabled"] and mp["fp16"]["scale_min"] > 1 and mp["fp16"]["skipped_after_calibration"] == []
    assert not mp["off"]["scaler_enabled"] and not mp["bf16"]["scaler_enabled"]
    cl = s["channels_last"]
    assert cl["fp32"]["cl_on_conv_weights_channels_last"] == 1.0 and cl["fp32"]["cl_off_conv_weights_channels_last"] == 0.0
    assert cl["fp32"]["max_abs_diff"] <= 1e-4 and cl["fp32"]["differ_not_near_tie"] == 0 and cl["fp32"]["n"] > 0
    assert cl["bf16"]["max_abs_diff"] <= 5e-2
    aug = s["augment_on_device"]
    assert aug["augment_input_devices"] == aug["augment_output_devices"] == aug["model_input_devices"] == ["cpu"]
    assert aug["mean_abs_change"] > 1e-3
    assert aug["copies"] == {}, aug["copies"]  # the profiler ran; on the CPU no copy to a device happens
    ck = s["checkpoint_resume"]["default"]
    assert ck["batches_compared"] > 0 and ck["max_abs_loss_diff"] <= 1e-4 and ck["lrs_equal"]
    assert ck["epochs_recorded"] == ck["epochs"] and ck["optimizer_step_devices_after_resume"] == ["cpu"]
    ex = s["export_to_cpu"]
    assert ex["fp32"]["labels_differ"] == 0 and ex["fp32"]["n"] > 0 and ex["cpu_learner_device"] == "cpu"
    assert all(a == b for a, b in ex["predict_labels"]) and len(ex["predict_labels"]) == 4


def test_quick_run_lesson_and_speed(quick_run):
    _, res = quick_run
    s = res["steps"]
    pets = s["lessons"]["01_pets"]
    assert pets["ok"] and pets["results"]["mode"] == "full" and pets["results"]["arch"] == "resnet34"
    assert pets["ran"] > 10 and pets["left_out"] >= 1 and pets["seconds"] > 0
    table = s["speed"]["table"]
    assert set(table) == {f"{c} {p}" for c in ("fp32", "bf16", "bf16_cl") for p in ("frozen", "unfrozen")}
    assert all(row["lessonkit"] > 0 for row in table.values()), table
    busy = s["gpu_busy"]
    for th in ("threads_default", "threads_2"):
        for ph in ("frozen", "unfrozen"):
            b = busy[th]["lessonkit"][ph]
            assert 0 <= b["busy"] <= 1 and b["total_s"] > 0 and b["wait_s"] >= 0, b
    assert busy["threads_2"]["lessonkit"]["threads"]["torch"] == 2
    if _fastai_installed():  # then fastai's side must have run, with numbers
        assert "skipped" not in s["speed"]["fastai"], s["speed"]["fastai"]
        assert all(row["fastai"] > 0 for row in table.values()), table
        assert busy["threads_2"]["fastai"]["threads"]["loader_workers_used"] == 2
    else:  # the only acceptable reason to leave fastai out
        assert "fastai is not installed" in s["speed"]["fastai"]["skipped"], s["speed"]["fastai"]
        assert "fastai is not installed" in s["gpu_busy"]["fastai"]["skipped"]
