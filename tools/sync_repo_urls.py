"""Keep every URL that names the course's repository in step with settings.ini, the one place that names it.

    python tools/sync_repo_urls.py            # rewrite whatever drifted (what `make badges` and `make export` run)
    python tools/sync_repo_urls.py --check    # list what drifted and exit 1 if anything did (tests/test_repo_urls.py)

settings.ini names the repository with `user`, `repo` and `branch`; its `git_url` derives from them. From those this
writes: each lesson's "Open in Colab" and "Open in Kaggle" badges (one line under the lesson's title), the clone URL in
each lesson's setup cell, and in README.md every Colab/Kaggle link, the `pip install "git+..."` and `git clone ...`
URLs. It also reports, without fixing, a Colab/Kaggle link to a notebook that does not exist.
"""
import argparse, configparser, json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
KAGGLE_BADGE = "https://kaggle.com/static/images/open-in-kaggle.svg"
_BADGE_LINE = re.compile(r"^\[!\[Open [Ii]n (Colab|Kaggle)\]")
_REPO_LINE = re.compile(r'(REPO = os\.environ\.get\("LESSONKIT_REPO"\) or ")([^"]*)(")')
_SEG = r"[^/\s)\"'`]+"   # one segment of a URL path


def repo_info(root: Path = ROOT) -> dict:
    "The repository as settings.ini names it: user, repo, branch and the git URL derived from them."
    cfg = configparser.ConfigParser()   # its default interpolation resolves git_url = https://github.com/%(user)s/...
    if not cfg.read(root / "settings.ini", encoding="utf8"): sys.exit(f"{root / 'settings.ini'} not found")
    d = cfg["DEFAULT"]
    return {"user": d["user"], "repo": d["repo"], "branch": d.get("branch", "main"), "git_url": d["git_url"]}


def blob_url(info: dict, path: str) -> str:
    "The GitHub page of `path` (relative to the repository's root) on the configured branch."
    return f"https://github.com/{info['user']}/{info['repo']}/blob/{info['branch']}/{path}"

def colab_url(info: dict, path: str) -> str: return blob_url(info, path).replace("https://github.com/", "https://colab.research.google.com/github/", 1)
def kaggle_url(info: dict, path: str) -> str: return f"https://kaggle.com/kernels/welcome?src={blob_url(info, path)}"

def badges(info: dict, path: str) -> str:
    "The one line of badges that opens notebook `path` in Colab or Kaggle."
    return (f"[![Open In Colab]({COLAB_BADGE})]({colab_url(info, path)}) "
            f"[![Open In Kaggle]({KAGGLE_BADGE})]({kaggle_url(info, path)})")


def fix_lesson(nb: dict, path: str, info: dict) -> tuple[dict, list[str]]:
    "Return the notebook with its badge line and setup-cell URL rewritten, and problems that can't be fixed here."
    problems, cells = [], nb["cells"]
    title = next((c for c in cells if c["cell_type"] == "markdown"), None)
    if title is None: return nb, [f"{path}: no markdown cell for the badges"]
    lines = "".join(title["source"]).split("\n")
    at = [i for i, l in enumerate(lines) if _BADGE_LINE.match(l)]
    if at: lines = lines[:at[0]] + [badges(info, path)] + [l for i, l in enumerate(lines[at[0]:], at[0]) if i not in at]
    else:   # under the title, set off by blank lines
        t = next((i for i, l in enumerate(lines) if l.startswith("# ")), -1)
        lines[t + 1:t + 1] = ["", badges(info, path)] + ([""] if t + 1 < len(lines) and lines[t + 1] else [])
    title["source"] = "\n".join(lines).splitlines(keepends=True)
    setup = [c for c in cells if c["cell_type"] == "code" and _REPO_LINE.search("".join(c["source"]))]
    if len(setup) != 1: problems.append(f"{path}: expected one setup cell with the line "
                                        f"REPO = os.environ.get(\"LESSONKIT_REPO\") or \"...\", found {len(setup)}")
    for c in setup:
        c["source"] = _REPO_LINE.sub(lambda m: m[1] + info["git_url"] + m[3], "".join(c["source"])).splitlines(keepends=True)
    return nb, problems


def fix_readme(text: str, info: dict) -> str:
    "README.md with every Colab/Kaggle link, pip `git+` URL and `git clone` URL pointing at the configured repository."
    u, r, b = info["user"], info["repo"], info["branch"]
    text = re.sub(rf"https://colab\.research\.google\.com/github/{_SEG}/{_SEG}/blob/{_SEG}/",
                  f"https://colab.research.google.com/github/{u}/{r}/blob/{b}/", text)
    text = re.sub(rf"https://(?:www\.)?kaggle\.com/kernels/welcome\?src=https://github\.com/{_SEG}/{_SEG}/blob/{_SEG}/",
                  f"https://kaggle.com/kernels/welcome?src=https://github.com/{u}/{r}/blob/{b}/", text)
    text = re.sub(r"git\+https://github\.com/[^\s\"'`)]+", f"git+{info['git_url']}", text)
    return re.sub(r"git clone https://github\.com/[^\s\"'`)]+", f"git clone {info['git_url']}", text)


def dead_links(text: str, where: str, info: dict, root: Path) -> list[str]:
    "Colab/Kaggle links in `text` to a notebook this repository doesn't have."
    pre = re.escape(f"/{info['user']}/{info['repo']}/blob/{info['branch']}/")
    return [f"{where}: links to {m[1]}, which does not exist" for m in re.finditer(rf"{pre}([^\s)\"'`]+)", text)
            if not (root / m[1]).is_file()]


def _dump(nb: dict) -> str: return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"   # nbdev_clean's format


def sync(root: Path = ROOT, write: bool = True) -> tuple[list[str], list[str]]:
    "Bring the URLs in line with settings.ini (or only look, with `write=False`): (files that drifted, problems)."
    info, drifted, problems = repo_info(root), [], []
    for nb_path in sorted((root / "nbs" / "lessons").glob("*.ipynb")):
        rel, old = nb_path.relative_to(root).as_posix(), nb_path.read_text(encoding="utf8")
        nb, probs = fix_lesson(json.loads(old), rel, info)
        new = _dump(nb)
        problems += probs + dead_links(new, rel, info, root)
        if new != old:
            drifted.append(rel)
            if write: nb_path.write_text(new, encoding="utf8")
    readme = root / "README.md"
    old = readme.read_text(encoding="utf8")
    new = fix_readme(old, info)
    problems += dead_links(new, "README.md", info, root)
    if new != old:
        drifted.append("README.md")
        if write: readme.write_text(new, encoding="utf8")
    return drifted, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything drifted")
    a = ap.parse_args()
    drifted, problems = sync(write=not a.check)
    info = repo_info()
    for f in drifted: print(f"{f}: {'differs from' if a.check else 'rewritten for'} {info['git_url']} ({info['branch']})")
    for p in problems: print(f"problem: {p}", file=sys.stderr)
    if a.check and drifted: print("Run `make badges` (python tools/sync_repo_urls.py) to fix.", file=sys.stderr)
    sys.exit(1 if problems or (a.check and drifted) else 0)


if __name__ == "__main__": main()
