"""tools/check_claims.py --combine: reports of lessons run apart become one report, as if run together."""
import json, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def report(lesson: str, claims: dict, seeds=(0, 1, 2), failed=()) -> dict:
    "A report as check_claims writes it; claims: {claim: [holds on each seed]}."
    return {"claims": [{"lesson": lesson, "claim": c, "shown_in": "sample",
                        "per_seed": {str(s): {"holds": h, "numbers": {"x": s}} for s, h in zip(seeds, hs)},
                        "holds": all(hs)} for c, hs in claims.items()],
            "all_hold": all(all(hs) for hs in claims.values()), "seeds": list(seeds), "lessons": [lesson],
            "failed_runs": list(failed), "seconds": {f"{lesson}/{s}": 1.0 for s in seeds}}


def combine(tmp_path, *reports, out="combined.json"):
    paths = []
    for i, r in enumerate(reports):
        paths.append(tmp_path / f"r{i}.json"); paths[-1].write_text(json.dumps(r))
    p = subprocess.run([sys.executable, str(ROOT / "tools" / "check_claims.py"), "--combine", *map(str, paths),
                        "--out", str(tmp_path / out)], capture_output=True, text=True)
    return p, (json.loads((tmp_path / out).read_text()) if (tmp_path / out).exists() else None)


def test_combined_report_keeps_every_seed_and_fails_when_one_claim_fails(tmp_path):
    p, r = combine(tmp_path, report("01_pets", {"a": [True, True, True]}),
                   report("02_cifar10", {"b": [True, False, True], "c": [True] * 3}))
    assert p.returncode == 1 and r["all_hold"] is False and r["lessons"] == ["01_pets", "02_cifar10"]
    by = {c["claim"]: c for c in r["claims"]}
    assert by["a"]["holds"] and not by["b"]["holds"] and by["c"]["holds"]
    assert by["b"]["per_seed"]["1"] == {"holds": False, "numbers": {"x": 1}}
    assert set(r["seconds"]) == {f"{l}/{s}" for l in ("01_pets", "02_cifar10") for s in range(3)}
    p, r = combine(tmp_path, report("01_pets", {"a": [True] * 3}), report("02_cifar10", {"c": [True] * 3}), out="ok.json")
    assert p.returncode == 0 and r["all_hold"] is True


def test_combining_different_seeds_or_a_lesson_twice_is_refused(tmp_path):
    p, r = combine(tmp_path, report("01_pets", {"a": [True] * 3}), report("02_cifar10", {"a": [True] * 2}, seeds=(0, 1)))
    assert p.returncode != 0 and "same seeds" in p.stderr and r is None
    p, r = combine(tmp_path, report("01_pets", {"a": [True] * 3}), report("01_pets", {"b": [True] * 3}))
    assert p.returncode != 0 and "repeats ['01_pets']" in p.stderr and r is None
