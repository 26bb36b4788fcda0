"""Build the course website into _site/ with no network (what `make site` runs).

    python tools/build_site.py [--out _site] [--runs runs] [--no-execute]

- **Home**: README.md, the course's story, with its links turned into links between the site's pages.
- **Lessons**, with their outputs: each lesson's executed copy in runs/ (written by `make lesson` and by the notebook
  tests) is used while it is fresh, i.e. a complete run of the lesson's current cells; otherwise the lesson is run
  headless in sample mode (tools/run_lesson.py, a few minutes on a CPU) and saved there first. Widgets show the static
  figure they fall back to in a headless run.
- **API reference**: the module notebooks (nbs/*.ipynb), their prose and examples, with each exported cell replaced by
  the signature and docstring of the public functions and classes it defines (Sphinx autodoc, nbdev's parameter
  comments included), and a link to their source.
- **Search**: Sphinx's own (a JavaScript index in the site: no server, no outside host).

The pages are staged in build/site/src, then Sphinx (docs/conf.py, with myst-nb and sphinx-book-theme from the
`site` extra) writes them; build/site/doctrees keeps Sphinx's cache, so a rebuild with fresh lessons takes seconds.
One progress line per notebook.
"""
import argparse, ast, configparser, hashlib, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from executed import RUNS, fresh_copy  # noqa: E402

DOCS, STAGE = ROOT / "docs", ROOT / "build" / "site"
BADGE_IMAGES = {"https://colab.research.google.com/assets/colab-badge.svg": "colab-badge.svg",
                "https://kaggle.com/static/images/open-in-kaggle.svg": "kaggle-badge.svg"}


def _rel(p: Path) -> str: return str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)


def _settings() -> dict:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "settings.ini", encoding="utf8")
    return dict(cfg["DEFAULT"])


def _write(path: Path, text: str, written: set):
    "Write only what changed, so Sphinx rereads only changed pages; `written` collects every page staged."
    written.add(path)
    if not (path.exists() and path.read_text(encoding="utf8") == text):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf8")
        written.add("changed")


def _inputs_digest() -> str:
    "What the site depends on besides the staged pages: Sphinx's configuration, the package (autodoc), settings.ini."
    files = [*sorted(DOCS.rglob("*")), *sorted((ROOT / "lessonkit").rglob("*.py")), ROOT / "settings.ini"]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files if f.is_file())).hexdigest()


def _directives(src: str) -> tuple[set, str]:
    "nbdev's `#| name ...` lines at the top of a cell, and the rest of the cell."
    lines, names = src.split("\n"), set()
    while lines and lines[0].startswith("#|"):
        names.add((lines.pop(0)[2:].split() or [""])[0].rstrip(":"))
    return names, "\n".join(lines).strip("\n")


def _local_badges(text: str, depth: int) -> str:
    "Badge images from the site itself instead of Colab's and Kaggle's servers."
    for url, name in BADGE_IMAGES.items(): text = text.replace(url, "../" * depth + f"_static/{name}")
    return text


def _md(source: str) -> dict:
    "A markdown cell the builder adds (its id: a digest of its text, so staging twice writes the same file)."
    return {"cell_type": "markdown", "id": hashlib.sha1(source.encode()).hexdigest()[:8], "metadata": {}, "source": source}


def _common_cell(cell: dict, depth: int) -> dict | None:
    "A cell as a page shows it: hidden cells go, nbdev's directive lines go, collapsed cells stay collapsible."
    src = "".join(cell["source"])
    if cell["cell_type"] == "markdown": return {**cell, "source": _local_badges(src, depth)}
    if cell["cell_type"] != "code": return None
    names, body = _directives(src)
    if names & {"hide", "default_exp"} or not body: return None
    meta = dict(cell.get("metadata", {}))
    if meta.get("jupyter", {}).get("source_hidden") or meta.get("cellView") == "form":   # collapsed in Jupyter / Colab
        meta["tags"] = sorted(set(meta.get("tags", [])) | {"hide-input"})
    return {**cell, "metadata": meta, "source": body}


def stage_lesson(executed: Path, dest: Path, written: set) -> int:
    nb = json.loads(executed.read_text(encoding="utf8"))
    nb["cells"] = [c for c in (_common_cell(c, 1) for c in nb["cells"]) if c]
    nb["metadata"] = {k: v for k, v in nb["metadata"].items() if k in ("kernelspec", "language_info")}
    _write(dest, json.dumps(nb, indent=1, ensure_ascii=False), written)
    return sum(bool(o.get("data", {}).get("image/png")) for c in nb["cells"] for o in c.get("outputs", []))


def _public_names(body: str, public: set) -> list[tuple[str, str, str]]:
    "The public functions, classes and constants a code cell defines, in order, with the autodoc directive for each."
    out = []
    for node in ast.parse(body).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)): out.append((node.name, "autofunction", ""))
        elif isinstance(node, ast.ClassDef): out.append((node.name, "autoclass", ""))
        elif (isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["_all_"]
              and isinstance(node.value, ast.List)):  # nbdev's `_all_`: public names made at run time (display.NotebookFigure)
            out += [(e.value, "autoclass" if e.value[:1].isupper() else "autofunction", "") for e in node.value.elts
                    if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            value = ast.get_source_segment(body, node.value) or ""
            opts = f"\n   :value: {value}" if len(value) <= 80 and "\n" not in value else ""   # not a whole table
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                # py:data, not autodata: a constant has no docstring, and autodoc would show its type's (dict's)
                out += [(n.id, "py:data", opts) for n in ast.walk(t) if isinstance(n, ast.Name)]
    return [o for o in out if o[0] in public]


def _all(py: Path) -> set[str]:
    "A module's `__all__`, read from its source (importing the package would take seconds: torch)."
    for node in ast.parse(py.read_text(encoding="utf8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def stage_module(nb_path: Path, dest: Path, written: set) -> int:
    "A module notebook as a page of the API reference: returns how many public names it documents."
    nb = json.loads(nb_path.read_text(encoding="utf8"))
    exp = next((m[1] for c in nb["cells"] if c["cell_type"] == "code"
                for m in [re.match(r"#\|\s*default_exp\s+(\S+)", "".join(c["source"]))] if m), None)
    if exp is None: raise SystemExit(f"{nb_path.relative_to(ROOT)} has no `#| default_exp`: it is no module notebook")
    mod = f"lessonkit.{exp}"
    public = _all(ROOT / "lessonkit" / (exp.replace(".", "/") + ".py"))
    cells, documented = [], 0
    for i, cell in enumerate(nb["cells"]):
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and i == 0:   # "# core" -> "# lessonkit.core"
            src = re.sub(rf"\A# {re.escape(exp)}\b", f"# {mod}", src)
            cell = {**cell, "source": src}
        if cell["cell_type"] == "code" and _directives(src)[0] & {"export", "exporti"}:
            names = _public_names(_directives(src)[1], public)
            documented += len(names)
            if names:
                rst = "\n\n".join(f".. {d}:: {mod}.{n}{opts}" for n, d, opts in names)
                cells.append(_md(f"```{{eval-rst}}\n.. currentmodule:: {mod}\n\n{rst}\n```"))
            continue
        if c := _common_cell(cell, 1): cells.append(c)
    missing = public - {n for c in cells if c["cell_type"] == "markdown"
                        for n in re.findall(rf"\.\. (?:auto\w+|py:data):: {re.escape(mod)}\.(\w+)", c["source"])}
    if missing: raise SystemExit(f"{nb_path.name}: public names not found in its exported cells: {sorted(missing)}")
    nb["cells"] = cells
    nb["metadata"] = {k: v for k, v in nb["metadata"].items() if k in ("kernelspec", "language_info")}
    _write(dest, json.dumps(nb, indent=1, ensure_ascii=False), written)
    return documented


def home_page(readme: str, lessons: list[Path], modules: list[Path], helpers: list[str], cfg: dict) -> str:
    "README.md as the home page: links to notebooks become links to their pages, other repository links go to GitHub."
    blob = f"https://github.com/{cfg['user']}/{cfg['repo']}/blob/{cfg['branch']}/"

    def link(m):
        target = m[2]
        if re.match(r"[a-z]+:|#|/", target): return m[0]   # a URL, an anchor or an absolute path
        path, _, anchor = target.partition("#")
        if path.startswith("nbs/lessons/") and path.endswith(".ipynb"): new = "lessons/" + Path(path).name
        elif re.fullmatch(r"nbs/[^/]+\.ipynb", path): new = "api/" + Path(path).name
        else: new = blob + path
        return f"[{m[1]}]({new}{'#' + anchor if anchor else ''})"

    text = re.sub(r"(?<!!)\[([^\[\]]*)\]\(([^)\s]+)\)", link, _local_badges(readme, 0))   # links, not images
    toc = lambda caption, docs: (f"\n```{{toctree}}\n:hidden:\n:caption: {caption}\n:maxdepth: 1\n\n"
                                 + "\n".join(docs) + "\n```\n")
    return (text.rstrip() + "\n" + toc("Lessons", [f"lessons/{p.stem}" for p in lessons])
            + toc("API reference", [f"api/{p.stem}" for p in modules] + ["api/lesson_helpers"] * bool(helpers)))


def helpers_page(helpers: list[str]) -> str:
    body = "\n\n".join(f"## `lessonkit.{h}`\n\n```{{eval-rst}}\n.. automodule:: lessonkit.{h}\n   :members:\n```"
                       for h in helpers)
    return ("# Lesson helpers\n\nFunctions a lesson introduces and exports (`#| default_exp lessons.<name>` in the "
            "lesson's notebook), documented here with the rest of the package.\n\n" + body + "\n")


def executed_lesson(nb_path: Path, runs: Path, execute: bool) -> tuple[Path, str]:
    "A fresh executed copy of a lesson, running it (sample mode) when there is none: (the copy, how it was had)."
    if copy := fresh_copy(nb_path, runs): return copy, f"fresh executed copy {_rel(copy)}"
    if not execute: raise SystemExit(f"{nb_path.name}: no fresh executed copy in {runs} and --no-execute was given")
    t0 = time.time()
    env = {**os.environ, "LESSONKIT_MODE": "sample", "MPLBACKEND": "Agg", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "run_lesson.py"), str(nb_path), "--out", str(runs)],
                       env=env, capture_output=True, text=True)
    copy = fresh_copy(nb_path, runs)
    if r.returncode or copy is None:
        raise SystemExit(f"{nb_path.name} failed while running for the site:\n{(r.stdout + r.stderr)[-4000:]}")
    return copy, f"ran in sample mode in {time.time() - t0:.0f} s, saved to {_rel(copy)}"


def copy_mathjax(static: Path):
    "MathJax 2 from the PyPI package jupyter-server-mathjax: the site renders formulas with no outside host."
    dest = static / "mathjax"
    if (dest / "MathJax.js").exists(): return
    import jupyter_server_mathjax
    src = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("localization", "unpacked", "*.md"), dirs_exist_ok=True)


def build(out: Path = ROOT / "_site", runs: Path = RUNS, execute: bool = True, quiet: bool = False) -> Path:
    t0 = time.time()
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    cfg, src, written = _settings(), STAGE / "src", set()
    lessons = sorted((ROOT / "nbs" / "lessons").glob("*.ipynb"))
    modules = sorted(p for p in (ROOT / "nbs").glob("*.ipynb") if not p.name.startswith(("_", ".")))
    if out.exists() and any(out.iterdir()) and not (out / "searchindex.js").exists():
        raise SystemExit(f"{out} exists and holds no site: choose an empty or new folder for --out")
    for p in lessons:
        copy, how = executed_lesson(p, runs, execute)
        n_img = stage_lesson(copy, src / "lessons" / p.name, written)
        say(f"  lesson  {p.stem:<16} {how} ({n_img} figures)")
    for p in modules:
        n = stage_module(p, src / "api" / p.name, written)
        say(f"  module  {p.stem:<16} {n} public names documented")
    helpers = sorted(f"lessons.{m.stem}" for m in (ROOT / "lessonkit" / "lessons").glob("*.py") if m.stem != "__init__")
    if helpers: _write(src / "api" / "lesson_helpers.md", helpers_page(helpers), written)
    readme = (ROOT / "README.md").read_text(encoding="utf8")
    _write(src / "index.md", home_page(readme, lessons, modules, helpers, cfg), written)
    for f in (DOCS / "_static").glob("*.svg"): _write(src / "_static" / f.name, f.read_text(encoding="utf8"), written)
    gone = [p for p in src.rglob("*") if p.is_file() and p not in written]   # pages of notebooks that are gone
    for f in gone: f.unlink()
    if gone:   # Sphinx forgets a removed page but leaves its HTML (and links from it) behind: write the site anew
        shutil.rmtree(STAGE / "html", ignore_errors=True)
        written.add("changed")
    copy_mathjax(STAGE / "static")
    stamp, digest = STAGE / "html.digest", _inputs_digest()
    if "changed" not in written and stamp.exists() and stamp.read_text() == digest:
        say("  sphinx  nothing changed since the last build")
    else:
        say(f"  sphinx  writing {out} ...")
        stamp.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        # Sphinx writes into build/site/html (myst-nb puts its jupyter_execute/ beside it), kept between builds so that
        # a rebuild only rereads and writes what changed; the finished site is then copied to `out`.
        r = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-c", str(DOCS), "-d",
                            str(STAGE / "doctrees"), str(src), str(STAGE / "html")], env=env, capture_output=True, text=True)
        if r.returncode: raise SystemExit(f"sphinx-build failed:\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}")
        for w in r.stderr.splitlines():
            if "WARNING" in w or "ERROR" in w: say(f"  sphinx  {w}")
        stamp.write_text(digest)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(STAGE / "html", out)
    say(f"Site built in {time.time() - t0:.0f} s: open {out / 'index.html'} (or serve it: python3 -m http.server -d "
        f"{_rel(out)} 8000, then open http://127.0.0.1:8000)")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "_site", help="where the site goes (default: _site/)")
    ap.add_argument("--runs", type=Path, default=RUNS, help="executed lessons: used while fresh, else written here")
    ap.add_argument("--no-execute", action="store_true", help="fail instead of running a lesson with no fresh copy")
    a = ap.parse_args()
    build(a.out.resolve(), a.runs.resolve(), execute=not a.no_execute)


if __name__ == "__main__": main()
