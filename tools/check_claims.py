"""Run each lesson's sample mode under several training seeds and report whether every claim its text makes holds.

    python tools/check_claims.py                      # the four lessons, seeds 0 1 2 (about 20 min on 2 cores)
    python tools/check_claims.py --lessons 01_pets --seeds 0 1
    python tools/check_claims.py --combine a.json b.json   # one report from runs made apart (e.g. a lesson at a time)

Each lesson lists its claims in a `lessonkit.colab.Claims` object at its end (a hidden cell). This script runs the
lesson headless (tools/run_lesson.py) with `$LESSONKIT_SEED` set to each seed and `$LESSONKIT_CLAIMS` naming a file
for the claims, and writes bench/results/lesson_claims.json:

    {"claims": [{"lesson": ..., "claim": ..., "shown_in": "sample" | "full",
                 "per_seed": {"0": {"holds": true, "numbers": {...}}, ...}, "holds": true}], ...}

A claim holds only when it holds on every seed. A claim marked `shown_in: "full"` (small data cannot show it; the
lesson's text says so, with its numbers) is reported with its numbers but does not count against `all_hold`. A run
that fails for another reason than its claims is reported under "failed_runs". The exit status is 0 only when every
sample-mode claim holds on every seed and no run failed.
"""
import argparse, json, os, platform, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted(p.stem for p in (ROOT / "nbs" / "lessons").glob("[0-9]*.ipynb"))


def run_one(lesson: str, seed: int, work: Path) -> tuple[dict | None, float, str]:
    "Run one lesson under one seed; return its claims record (None if it wrote none), the seconds and the output tail."
    claims = work / f"{lesson}.seed{seed}.claims.json"
    env = dict(os.environ, LESSONKIT_SEED=str(seed), LESSONKIT_CLAIMS=str(claims), LESSONKIT_MODE="sample",
               OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    t0 = time.time()
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "run_lesson.py"), str(ROOT / "nbs" / "lessons" / f"{lesson}.ipynb"),
                        "--out", str(work / f"seed{seed}")], env=env, capture_output=True, text=True)
    secs = time.time() - t0
    tail = (p.stdout + p.stderr)[-3000:]
    return (json.loads(claims.read_text()) if claims.exists() else None), secs, tail


def merge(records: dict) -> list[dict]:
    "records: {(lesson, seed): claims record} -> one entry per (lesson, claim) with its result on each seed."
    entries = {}
    for (lesson, seed), rec in sorted(records.items()):
        for c in rec["claims"]:
            e = entries.setdefault((lesson, c["claim"]), {"lesson": lesson, "claim": c["claim"], "shown_in": c["shown_in"],
                                                          "per_seed": {}})
            e["per_seed"][str(seed)] = {"holds": c["holds"], "numbers": c["numbers"]}
    seeds = {(lesson, seed) for lesson, seed in records}
    for (lesson, _), e in entries.items():
        n_seeds = sum(1 for l, _s in seeds if l == lesson)
        # Missing on a seed (the lesson made the claim on some runs only) counts as not holding.
        e["holds"] = len(e["per_seed"]) == n_seeds and all(s["holds"] for s in e["per_seed"].values())
    return list(entries.values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lessons", nargs="+", default=LESSONS, help=f"lesson names (default: {' '.join(LESSONS)})")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "lesson_claims.json")
    ap.add_argument("--combine", nargs="+", type=Path, help="reports written by earlier runs (other lessons, same seeds) "
                    "to put together into one, instead of running anything")
    a = ap.parse_args()
    if a.combine: return write_report(*combine(a.combine), a.out)
    unknown = set(a.lessons) - set(LESSONS)
    if unknown: sys.exit(f"Unknown lessons {sorted(unknown)}: choose from {LESSONS}.")
    records, failed, seconds = {}, [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for lesson in a.lessons:
            for seed in a.seeds:
                rec, secs, tail = run_one(lesson, seed, Path(tmp))
                seconds[f"{lesson}/{seed}"] = round(secs, 1)
                if rec is None:
                    failed.append({"lesson": lesson, "seed": seed, "output_tail": tail})
                    print(f"{lesson} seed {seed}: FAILED before its claims were checked ({secs:.0f} s)", flush=True)
                    continue
                records[(lesson, seed)] = rec
                bad = [c["claim"] for c in rec["claims"] if not c["holds"] and c["shown_in"] == "sample"]
                print(f"{lesson} seed {seed}: {len(rec['claims']) - len(bad)}/{len(rec['claims'])} claims hold"
                      + (f"; not: {bad}" if bad else "") + f" ({secs:.0f} s)", flush=True)
    write_report(records, failed, seconds, a.lessons, a.seeds, a.out)


def combine(paths: list[Path]) -> tuple:
    "Put reports of separate runs (each lesson once, the same seeds) back into records, failures and times."
    records, failed, seconds, lessons, seeds = {}, [], {}, [], None
    for p in paths:
        r = json.loads(p.read_text())
        if seeds is not None and r["seeds"] != seeds: sys.exit(f"{p} ran seeds {r['seeds']}, the others {seeds}: combine runs of the same seeds.")
        if dup := set(r["lessons"]) & set(lessons): sys.exit(f"{p} repeats {sorted(dup)}: combine each lesson's run once.")
        seeds, lessons = r["seeds"], lessons + r["lessons"]
        for c in r["claims"]:
            for seed, res in c["per_seed"].items():
                rec = records.setdefault((c["lesson"], int(seed)), {"claims": []})
                rec["claims"].append({"claim": c["claim"], "shown_in": c["shown_in"], **res})
        failed += r["failed_runs"]; seconds.update(r["seconds"])
    return records, failed, seconds, sorted(lessons), seeds


def write_report(records: dict, failed: list, seconds: dict, lessons: list, seeds: list, out: Path):
    "Write the report atomically (a `.partial.json` unless it covers every lesson on seeds 0 1 2); exit 0 if all hold."
    claims = merge(records)
    all_hold = not failed and all(c["holds"] for c in claims if c["shown_in"] == "sample")
    report = {"claims": claims, "all_hold": all_hold, "seeds": seeds, "lessons": lessons, "failed_runs": failed,
              "seconds": seconds, "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
              "date": time.strftime("%Y-%m-%d")}
    if set(lessons) != set(LESSONS) or seeds != [0, 1, 2]:
        out = out.with_name(out.stem + ".partial.json") if out.name == "lesson_claims.json" else out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp_out, out)  # atomic: a half-written report never replaces a good one
    n_sample = sum(c["shown_in"] == "sample" for c in claims)
    print(f"{sum(c['holds'] for c in claims if c['shown_in'] == 'sample')}/{n_sample} sample claims hold on every seed, "
          f"{len(claims) - n_sample} shown in full mode only, {len(failed)} failed runs -> {out}")
    sys.exit(0 if all_hold else 1)


if __name__ == "__main__": main()
