"""Data-parallel training (`lessonkit.distributed`) in real processes: the scripts in tests/ddp/ run in 2 CPU processes
(gloo, on the loopback interface only) started by torchrun, as a user's script would be, and write what each process
saw; these tests compare the processes with each other and with one process. The module's notebook runs `launch` (2
processes forked from the notebook) itself."""
import json, multiprocessing, os, signal, socket, subprocess, sys, tarfile, time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DDP = ROOT / "tests" / "ddp"
sys.path.insert(0, str(DDP))
import fault  # noqa: E402
from common import pets_dls, random_dls, tiny_learner  # noqa: E402
from lessonkit.core import LessonkitError  # noqa: E402
from lessonkit.distributed import launch  # noqa: E402
from lessonkit.inference import load_learner  # noqa: E402
from lessonkit.learner import vision_learner  # noqa: E402
from lessonkit.metrics import accuracy  # noqa: E402


def script_env(out: Path) -> dict:
    "The environment of the scripts: one thread each, loopback only, quiet, their own caches and output folder."
    return {**os.environ, "DDP_TEST_OUT": str(out), "LESSONKIT_HOME": str(out / "home"), "OMP_NUM_THREADS": "1",
            "GLOO_SOCKET_IFNAME": "lo", "MPLBACKEND": "Agg", "IN_TEST": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}


def torchrun(script: str, *args: str, out: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    "`torchrun --standalone --nproc_per_node=2 script args` (its rendezvous on a free port of 127.0.0.1)."
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--monitor-interval=0.1",
           str(DDP / script), *args]
    return subprocess.run(cmd, env=script_env(out), capture_output=True, text=True, timeout=timeout)


CALTECH = dict(arch="mobilenet_v2", size=64, bs=4, max_epochs=3, patience=1, keep_fc=False)


def write_caltech_script(out: Path):
    "The script the Caltech lesson writes for torchrun (`ddp_script`), for 3 classes of the bundled sample, small: train.py runs it."
    from lessonkit.lessons.caltech101 import ddp_script
    for c in ("airplanes", "Faces_easy", "Motorbikes"):
        (out / "caltech" / c).mkdir(parents=True)
        for f in sorted((ROOT / "data" / "caltech101" / "101_ObjectCategories" / c).glob("*.jpg")):
            (out / "caltech" / c / f.name).symlink_to(f)
    (out / "train_caltech.py").write_text(ddp_script(out / "caltech", **CALTECH, out=str(out / "caltech_out")))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "tests/ddp/train.py under torchrun, once: what each of the 2 ranks saw."
    out = tmp_path_factory.mktemp("ddp")
    (out / "src" / "tiny").mkdir(parents=True)
    (out / "src" / "tiny" / "a.txt").write_text("a file of a dataset")
    with tarfile.open(out / "tiny.tgz", "w:gz") as tf: tf.add(out / "src" / "tiny", arcname="tiny")
    write_caltech_script(out)
    p = torchrun("train.py", out=out)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_both_ranks_end_with_identical_weights(run):
    _, (r0, r1) = run
    for a, b in [(r0["pets"]["weights"], r1["pets"]["weights"]), (r0["fine_tuned"], r1["fine_tuned"]),
                 (r0["best"]["weights"], r1["best"]["weights"]), (r0["resume"]["whole"], r1["resume"]["whole"])]:
        assert same_weights(a, b)   # parameters and BatchNorm statistics, bit for bit


def test_shares_are_disjoint_and_cover_each_epoch(run):
    _, (r0, r1) = run
    n = r0["pets"]["n_train"]
    s0, s1 = r0["pets"]["shares"], r1["pets"]["shares"]
    assert len(s0) == len(s1) == 2
    for a, b in zip(s0, s1):
        assert not set(a) & set(b) and len(a) == len(b) == n // 2       # disjoint, equally long
        assert len(set(a) | set(b)) == n - n % 2 and set(a) | set(b) <= set(range(n))
    assert s0[0] != s0[1]                                                # a new order every epoch
    assert r0["pets"]["n_train_batches"] == r1["pets"]["n_train_batches"] == (n // 2) // 32


def test_augmentation_draws_differ_between_ranks(run):
    _, (r0, r1) = run
    for a, b in zip(r0["pets"]["draws"], r1["pets"]["draws"]): assert not torch.equal(a, b)
    assert not torch.equal(r0["pets"]["draws"][0], r0["pets"]["draws"][1])


def test_learning_happened_on_real_data(run):
    _, (r0, _) = run
    vals, losses = r0["pets"]["values"], r0["pets"]["losses"]
    targets = r0["pets"]["targets"]
    majority = max(int((targets == 0).sum()), int((targets == 1).sum())) / len(targets)
    assert vals[-1]["accuracy"] > max(majority, 0.5) + 0.1, (vals, majority)
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses


def test_gathered_validation_equals_one_process(run):
    "The accuracy and loss computed from every rank's gathered predictions are those of one process with the same weights."
    _, (r0, r1) = run
    dls = pets_dls()
    assert dls.train.n == r0["pets"]["n_train"]
    learn = vision_learner(dls, "mobilenet_v2", metrics=accuracy)
    learn.model.load_state_dict(r0["pets"]["weights"])
    probs, targets, losses = learn.get_preds(with_loss=True)
    assert targets.tolist() == r0["pets"]["targets"].tolist() == r1["pets"]["targets"].tolist() == dls.valid.labels
    assert torch.allclose(probs, r0["pets"]["probs"], atol=1e-5) and torch.equal(r0["pets"]["probs"], r1["pets"]["probs"])
    last = r0["pets"]["values"][-1]
    assert last["accuracy"] == accuracy(probs, targets)
    assert abs(last["valid_loss"] - float(losses.mean())) < 1e-5
    assert torch.equal(r0["pets"]["tta"], r1["pets"]["tta"]) and r0["pets"]["tta"].shape == probs.shape
    assert r0["pets"]["tta_targets"].tolist() == dls.valid.labels
    assert r0["pets"]["dls_after"]   # after the block, the learner has its own loaders back


def test_only_rank_0_wrote_files(run):
    out, (r0, _) = run
    mine = sorted(str(p.relative_to(out / "files0")) for p in (out / "files0").rglob("*") if p.is_file())
    assert mine == ["export.pth", "history.csv", "models/checkpoint.pth", "models/final.pth"], mine
    assert not (out / "files1").exists()
    assert len(list(out.glob("extracted_by_rank*"))) == 1 and (out / "data" / "tiny" / "a.txt").is_file()
    # the files load into one process: no "module." prefix
    state = torch.load(out / "files0" / "models" / "final.pth", weights_only=True)["model"]
    assert not any(k.startswith("module.") for k in state)
    learn = vision_learner(pets_dls(), "mobilenet_v2", pretrained=False, path=out / "files0")
    learn.load("final")
    assert same_weights(learn.model.state_dict(), r0["pets"]["weights"])
    exported = load_learner(out / "files0" / "export.pth", device="cpu")
    assert torch.allclose(exported.get_preds(learn.dls.valid)[0], r0["pets"]["probs"], atol=1e-5)
    assert len((out / "files0" / "history.csv").read_text().splitlines()) == 3   # the header and 2 epochs, once


def test_decisions_reach_every_rank_at_the_same_step(run):
    _, (r0, r1) = run
    assert r0["early_stop_epochs"] == r1["early_stop_epochs"] < 8               # early stopping fired, in both
    assert r0["nan"] == r1["nan"] == (0, 2)                                      # rank 1's NaN stopped rank 0 too
    f0, f1 = r0["lr_find"], r1["lr_find"]
    assert f0 == f1 and f0["n"] < 40 and f0["stopped"].startswith(("the smoothed loss", "the loss became")), f0


def test_freezing_between_fits(run):
    _, (r0, r1) = run
    for r in (r0, r1): assert r["frozen_body_unchanged"] and r["body_trained"]


def test_best_model_is_restored_in_every_rank(run):
    out, (r0, r1) = run
    assert r0["best"]["epoch"] == r1["best"]["epoch"] is not None
    assert (out / "shared" / "models" / "best.pth").is_file()


def test_resume_continues_exactly(run):
    _, (r0, r1) = run
    for r in (r0, r1):
        assert r["resume"]["epochs"] == [0, 1, 2]
        assert same_weights(r["resume"]["whole"], r["resume"]["resumed"])
        assert r["resume"]["whole_losses"] == r["resume"]["resumed_losses"]


def test_resume_with_another_number_of_processes_is_refused(run):
    out, _ = run
    learn = tiny_learner(random_dls(), path=out / "shared")
    with pytest.raises(LessonkitError, match=r"a run of 2 process\(es\), and this run has 1\. Resume with 2: torchrun --nproc_per_node=2"):
        learn.fit_one_cycle(3, 0.05, resume="ck_epoch0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]


def fork_ranks(mode: str, out: Path) -> list:
    "tests/ddp/fault.py's `run_rank` in 2 processes forked from this one (see there)."
    port, ctx = free_port(), multiprocessing.get_context("fork")
    procs = [ctx.Process(target=fault.run_rank, args=(mode, out, r, port)) for r in (0, 1)]
    for p in procs: p.start()
    return procs


def test_killed_rank_stops_the_other_with_a_clear_error_and_the_run_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    p0, p1 = fork_ranks("kill", tmp_path)
    try:
        p0.join(120); end = time.time(); p1.join(60)
    finally:
        for p in (p0, p1): p.kill() if p.is_alive() else None
    assert p1.exitcode == -signal.SIGKILL and p0.exitcode == 1
    assert end - float((tmp_path / "dies_at").read_text()) < 60
    err = (tmp_path / "error0.txt").read_text()
    assert err.startswith("LessonkitError: Process 0 of 2 lost contact with the others"), err
    assert "fit(..., resume='checkpoint')" in err
    # the same number of processes carries on from the checkpoint of epoch 0 (started here by `launch`)
    r0, r1 = launch(fault.train, "resume", tmp_path, nprocs=2)
    assert r0["epochs"] == r1["epochs"] == [0, 1, 2, 3] and same_weights(r0["weights"], r1["weights"])


def test_hung_rank_times_out_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    p0, p1 = fork_ranks("hang", tmp_path)
    try:
        p0.join(120); end = time.time()
    finally:
        for p in (p0, p1): p.kill() if p.is_alive() else None   # rank 1 is stopped: kill it
        p1.join()
    assert p0.exitcode == 1 and 4 < end - float((tmp_path / "dies_at").read_text()) < 60
    err = (tmp_path / "error0.txt").read_text()
    assert "lost contact with the others" in err and "timeout=5 s" in err, err



def test_caltech_lesson_script(run):
    "The Caltech lesson's script for torchrun (run by train.py in the same 2 processes): it trains, rank 0 prints and exports."
    out, _ = run
    printed = [(out / f"caltech_stdout{r}.txt").read_text() for r in (0, 1)]
    results = [l for l in printed[0].splitlines() if l.startswith("{")]
    assert printed[1] == "" and len(results) == 1, printed   # rank 0 printed (its epoch table and) the result, once
    res = json.loads(results[0])
    assert res["processes"] == 2 and 1 <= len(res["values"]) <= 3 and 0 <= res["best_epoch"] < len(res["values"])
    assert res["test_top1"] > 0.6, res   # 3 classes: chance is 1/3
    written = sorted(str(f.relative_to(out / "caltech_out")) for f in (out / "caltech_out").rglob("*") if f.is_file())
    assert written == ["caltech-ddp.pth", "models/caltech-ddp-best.pth"], written
    # the exported model, in one process, scores what the run reported on the same test images
    from lessonkit.data import DataLoaders
    size = CALTECH["size"]
    dls = DataLoaders.from_folder(out / "caltech", splits=(0.5, 0.25, 0.25), seed=42, size=size, item_size=size * 8 // 7,
                                  item_resize="crop", bs=8, device="cpu")
    learn = load_learner(out / "caltech_out" / "caltech-ddp.pth", device="cpu")
    probs, targets = learn.get_preds(dls.test)
    assert learn.classes == dls.classes and abs(accuracy(probs, targets) - res["test_top1"]) < 1e-6
