"""Executed copies of the lessons in runs/: which one is fresh. Standard library only, so that reading this is quick.

`make lesson` (tools/run_lesson.py) and the notebook tests (tests/test_notebooks.py) save each lesson they run to
runs/<lesson>.ipynb, with `metadata.lessonkit = {"source_digest": ..., "complete": true}`; the course website
(tools/build_site.py) shows such a copy while it is a complete run of the lesson's current cells.
"""
import hashlib, json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs"


def source_digest(nb_path: Path) -> str:
    "A digest of a notebook's cells (their kind and source): an executed copy is fresh if it ran the same cells."
    cells = json.loads(Path(nb_path).read_text(encoding="utf8"))["cells"]
    key = json.dumps([[c["cell_type"], "".join(c["source"])] for c in cells], ensure_ascii=False)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def fresh_copy(nb_path: Path, folder: Path = RUNS) -> Path | None:
    "`folder`/<name>.ipynb if it is a complete run of `nb_path`'s current cells, else None."
    copy = Path(folder) / Path(nb_path).name
    try: meta = json.loads(copy.read_text(encoding="utf8"))["metadata"].get("lessonkit", {})
    except (OSError, ValueError, KeyError): return None
    return copy if meta.get("complete") and meta.get("source_digest") == source_digest(nb_path) else None
