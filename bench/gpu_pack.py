"""Pack what bench/gpu_check.py needs for a GPU machine with no network, and install it there.

A lent GPU machine has its own Python (3.12 so far) with PyTorch, torchvision, NumPy, Pillow, Matplotlib and tqdm,
and nothing can be downloaded there. This script, on a machine that reaches PyPI, downloads as wheels what the check
needs beyond those, for that Python on manylinux x86-64, into an ignored folder (bench/.gpu_wheels, under 60 MB):

- group `check`: what runs the lessons as notebooks (nbdev 2.4.14's notebook reader and execnb's shell, with
  fastcore<2 and IPython), and ipywidgets (lessonkit.widgets) with their needs;
- group `fastai`: fastai 2.8 and the pure-Python part of its needs (the pins of bench/_common.py). Its large compiled
  needs (pandas, scikit-learn, scipy: 60 MB of wheels together) are not carried; the GPU image has them (see the
  device notes), and where they are missing gpu_check records the fastai comparison as skipped, saying why.

Each group installs into its own folder (fastai needs fastcore 2, nbdev needs fastcore<2); nothing is installed into
the machine's own environment, so its torch is never touched.

    python bench/gpu_pack.py download [--python-version 3.12] [--dest bench/.gpu_wheels] [--no-fastai] [--dry-run]
    python bench/gpu_pack.py install --wheels bench/.gpu_wheels --target /tmp/gpu_site   # on the GPU machine

`install` first checks that this Python is the one the wheels were packed for (manifest.json), and stops with a
message saying how to re-pack if not. bench/gpu_check.py --wheels DIR runs `install` itself, then the check.
"""
from __future__ import annotations
import argparse, json, os, re, subprocess, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FASTAI_PKGS, ROOT  # noqa: E402

DEFAULT_DEST = ROOT / "bench" / ".gpu_wheels"
LIMIT_MB = 60
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]
# The versions the dev extra resolves to (nbdev 2.4.14 needs fastcore<2 and execnb<0.2, see README "Developing").
CHECK_PKGS = [
    "nbdev==2.4.14", "execnb==0.1.18", "fastcore==1.14.5", "astunparse==1.6.3", "asttokens==3.0.2",
    "ipython==9.18.1", "ipython-pygments-lexers==1.1.1", "jedi==0.20.1", "parso==0.8.7", "matplotlib-inline==0.2.2",
    "pexpect==4.9.0", "ptyprocess==0.7.0", "prompt-toolkit==3.0.53", "wcwidth==0.9.4", "pygments==2.21.0",
    "stack-data==0.6.3", "executing==2.3.0", "pure-eval==0.2.4", "traitlets==5.16.1", "psutil==7.2.2",
    "decorator==5.2.1",
    "ipywidgets==8.1.9", "comm==0.2.3", "widgetsnbextension==4.0.16", "jupyterlab-widgets==3.0.17",
]
# fastai's large compiled needs, and the needs of those, are left to the machine (too large to carry); the rest of
# what fastai imports beyond torch, torchvision, numpy, pillow and matplotlib is carried.
FASTAI_MACHINE = ("pandas", "scikit-learn", "scipy", "joblib", "threadpoolctl", "narwhals")
FASTAI_CARRY = [p for p in FASTAI_PKGS if p.split("==")[0] not in FASTAI_MACHINE] + [
    "mdurl==0.1.2", "pygments==2.21.0", "pyyaml==6.0.4", "packaging==26.4", "requests==2.34.2", "urllib3==2.8.0",
    "idna==3.20", "charset-normalizer==3.5.3", "certifi==2026.10.19.post1"]
GROUPS = {"check": CHECK_PKGS, "fastai": FASTAI_CARRY}


class PackError(Exception):
    "A problem with the packed wheels, with a message saying what to do."


def _name(req: str) -> str: return re.split(r"[=<>!~ ]", req, 1)[0]


def download_commands(dest: Path, python_version: str, groups: list[str]) -> dict[str, list[str]]:
    "The pip command that downloads each group's wheels (binary wheels only, for `python_version` on manylinux x86-64)."
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    return {g: [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                "--python-version", python_version, "--implementation", "cp", *plat, "-d", str(dest / g), *GROUPS[g]]
            for g in groups}


def download(dest: Path = DEFAULT_DEST, python_version: str = "3.12", fastai: bool = True,
             dry_run: bool = False, limit_mb: float = LIMIT_MB) -> dict:
    "Download the wheels of each group into dest/<group>/ (emptied first) and write dest/manifest.json."
    if not re.fullmatch(r"3\.\d+", python_version):
        raise PackError(f"--python-version must look like 3.12, not {python_version!r}.")
    groups = ["check"] + (["fastai"] if fastai else [])
    cmds = download_commands(dest, python_version, groups)
    if dry_run:
        for g, c in cmds.items(): print(f"{g}: {' '.join(c)}")
        return {"dry_run": True, "commands": cmds}
    manifest = {"python_version": python_version, "platforms": PLATFORMS, "groups": {},
                "machine_provides": ["torch", "torchvision", "numpy", "pillow", "matplotlib", "tqdm"],
                "fastai_needs_from_machine": [p for p in FASTAI_MACHINE[:3]]}
    for g, cmd in cmds.items():
        d = dest / g
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.whl"): old.unlink()  # two versions of one package would stop the install
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode: raise PackError(f"pip download failed for group {g}:\n{r.stderr[-3000:]}")
        files = sorted(p.name for p in d.glob("*.whl"))
        names = {_name(f.split("-")[0]).lower().replace("_", "-") for f in files}
        missing = [p for p in GROUPS[g] if _name(p).lower().replace("_", "-") not in names]
        if missing: raise PackError(f"pip downloaded no wheel for {missing} (group {g}).")
        manifest["groups"][g] = files
    total = sum(f.stat().st_size for f in dest.glob("*/*.whl"))
    manifest["megabytes"] = round(total / 2**20, 2)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if total > limit_mb * 2**20:
        raise PackError(f"The wheels in {dest} take {total / 2**20:.1f} MB, over the {limit_mb} MB that may travel. "
                        "Leave the fastai group out (--no-fastai) or carry less.")
    return manifest


def read_manifest(wheels: Path) -> dict:
    "The manifest of a packed folder, checked against this Python; a PackError saying how to re-pack if it does not fit."
    f = Path(wheels) / "manifest.json"
    if not f.is_file():
        raise PackError(f"{f} is missing: {wheels} was not made by `python bench/gpu_pack.py download`. "
                        "Pack the wheels first (on a machine that reaches PyPI) and carry the folder.")
    m = json.loads(f.read_text())
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if m.get("python_version") != here:
        raise PackError(f"The wheels in {wheels} were packed for Python {m.get('python_version')}, but this is Python "
                        f"{here} ({sys.executable}). Re-pack them for this Python: "
                        f"python bench/gpu_pack.py download --python-version {here}")
    return m


def install(wheels: Path, target: Path, groups: list[str] | None = None) -> dict[str, Path]:
    """Install each group's wheels, offline and without their dependencies, into target/<group>; returns the folders.
    Nothing goes into this Python's own environment."""
    m = read_manifest(wheels)
    out = {}
    for g in groups or list(m["groups"]):
        files = [Path(wheels) / g / f for f in m["groups"].get(g, [])]
        absent = [str(f) for f in files if not f.is_file()]
        if absent: raise PackError(f"Wheels listed in the manifest are missing: {absent[:3]}. Carry the whole folder.")
        out[g] = Path(target) / g
        out[g].mkdir(parents=True, exist_ok=True)
        if not files: continue
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", str(out[g]), *map(str, files)]
        # pip's user config may name constraints or indexes that do not exist on the GPU machine: ignore them
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PIP_CONFIG_FILE=os.devnull))
        if r.returncode: raise PackError(f"pip install of group {g} failed:\n{r.stderr[-3000:]}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="download the wheels (needs PyPI)")
    d.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    d.add_argument("--python-version", default="3.12", help="the GPU machine's Python, major.minor")
    d.add_argument("--no-fastai", action="store_true", help="leave out the fastai group")
    d.add_argument("--dry-run", action="store_true", help="print the pip commands only")
    i = sub.add_parser("install", help="install packed wheels into a folder (offline)")
    i.add_argument("--wheels", type=Path, default=DEFAULT_DEST)
    i.add_argument("--target", type=Path, required=True)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "download":
            m = download(a.dest, a.python_version, not a.no_fastai, a.dry_run)
            if not a.dry_run:
                print(f"{sum(map(len, m['groups'].values()))} wheels for Python {m['python_version']}, "
                      f"{m['megabytes']} MB, in {a.dest}")
        else:
            for g, p in install(a.wheels, a.target).items(): print(f"{g}: {p}")
    except PackError as e:
        sys.exit(f"gpu_pack: {e}")


if __name__ == "__main__": main()
