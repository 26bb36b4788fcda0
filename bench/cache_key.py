"""What the content hash in the image cache's key costs (issue 19, item 9).

The key of a decoded image was its path, modification time and size; it now also hashes the file's content (all of it
up to 128 KiB, else its first and last 64 KiB), so that a file replaced by another of the same size and time is
decoded again. This script builds the Pets loaders (the sample's `from_name_re`, 128 px) with each key, interleaved
(old, new, old, new, ...) in one process, and reports medians:

- cold: as in a new process: the memory cache and the remembered hashes emptied, so every image is decoded and every
  file read for its hash (what building the loaders costs the first time);
- warm: built again at once, every image from the memory cache (where the key is most of the work);
- keys: the key of every file alone, as in a new process (nothing remembered).

On the bundled sample (files of 5-10 KB) and, where this machine has them, the same 259 photos at full resolution
(/work/shared/data/oxford-iiit-pet/images, about 100 KB each). Times are process CPU time (all threads), which a
loaded machine disturbs far less than wall time. Prints one JSON line (bench/results/cache_key.json).
Run: .venv/bin/python bench/cache_key.py [--repeats 5]"""
from __future__ import annotations
import argparse, hashlib, os, statistics, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PETS_PAT, ROOT, SHARED_PETS, cores, load1, result, write_result  # noqa: E402

import torch  # noqa: E402
import lessonkit.images as images  # noqa: E402
from lessonkit.data import DataLoaders  # noqa: E402
from lessonkit.images import clear_image_cache, get_image_files  # noqa: E402

NEW_KEY = images._cache_key


def old_key(path: Path, hw: tuple[int, int], method: str) -> str:
    "The key before issue 19: path, modification time and size only."
    st = os.stat(path)
    raw = f"{Path(path).resolve()}|{st.st_mtime_ns}|{st.st_size}|{hw[0]}x{hw[1]}|{method}|1"
    return hashlib.sha1(raw.encode()).hexdigest()


def timed(f) -> float:
    "Process CPU time (all threads) of `f()`: on a shared, loaded machine it varies far less than wall time."
    t = time.process_time(); f(); return time.process_time() - t


def measure(folder: Path, repeats: int) -> dict:
    files = get_image_files(folder)
    build = lambda: DataLoaders.from_name_re(folder, files, PETS_PAT, size=128, device="cpu", progress=False)
    times = {k: {"cold": [], "warm": [], "keys": []} for k in ("old", "new")}
    for _ in range(repeats):
        for name, key in (("old", old_key), ("new", NEW_KEY)):
            images._cache_key = key
            clear_image_cache(); images._hashes.clear()
            times[name]["cold"].append(timed(build))
            times[name]["warm"].append(timed(build))
            images._hashes.clear()
            times[name]["keys"].append(timed(lambda: [key(f, (128, 128), "squish") for f in files]))
    images._cache_key = NEW_KEY
    med = {k: {p: round(statistics.median(v), 4) for p, v in d.items()} for k, d in times.items()}
    sizes = sorted(f.stat().st_size for f in files)
    return {"files": len(files), "median_file_kb": round(sizes[len(sizes) // 2] / 1024, 1),
            "hashed_whole": sum(s <= 2 * images._HASHED for s in sizes), "median_s": med,
            "new_over_old": {p: round(med["new"][p] / med["old"][p], 3) for p in ("cold", "warm", "keys")},
            "new_minus_old_ms": {p: round(1000 * (med["new"][p] - med["old"][p]), 1) for p in ("cold", "warm", "keys")}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(cores())
    os.environ["LESSONKIT_HOME"] = tempfile.mkdtemp(prefix="lessonkit-bench-")
    load_before = load1()
    details = {"sample": measure(ROOT / "data/pets/images", args.repeats)}
    if SHARED_PETS.is_dir(): details["full_resolution"] = measure(SHARED_PETS, args.repeats)
    details.update(load_before=load_before, load_after=load1(), size=128,
                   clock="process CPU time", note="lessonkit: cold build with the content-hashing key; the old key's times are in details")
    main_case = details.get("full_resolution", details["sample"])
    out = result("cache_key", "s", True, main_case["median_s"]["new"]["cold"], None, None, args.repeats, details)
    write_result(out)
    import json
    print(json.dumps(out))


if __name__ == "__main__":
    main()
