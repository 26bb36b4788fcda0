"""One place names the repository: settings.ini's `user`, `repo` and `branch`. Every other URL that names it (the
lessons' Colab and Kaggle badges, the setup cells' clone URL, the README's links and install commands) is written
from there by tools/sync_repo_urls.py (`make badges`); these tests fail when one drifts, and check that a new name in
settings.ini reaches every one of them."""
import configparser, json, re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import sync_repo_urls as S  # noqa: E402

LESSONS = sorted((ROOT / "nbs" / "lessons").glob("*.ipynb"))


def test_settings_name_the_repository_once():
    raw = configparser.ConfigParser(interpolation=None)
    raw.read(ROOT / "settings.ini")
    d = raw["DEFAULT"]
    assert d["git_url"] == "https://github.com/%(user)s/%(repo)s", "git_url must derive from user and repo"
    assert d["doc_host"] == "https://%(user)s.github.io" and d["doc_baseurl"] == "/%(repo)s"
    info = S.repo_info(ROOT)
    assert info["git_url"] == f"https://github.com/{d['user']}/{d['repo']}"
    from nbdev.config import get_config   # nbdev reads the same values
    assert get_config(path=ROOT).git_url == info["git_url"]


def test_every_url_agrees_with_settings():
    drifted, problems = S.sync(ROOT, write=False)
    assert not problems, problems
    assert not drifted, f"{drifted} disagree with settings.ini: run `make badges` (python tools/sync_repo_urls.py)"
    info = S.repo_info(ROOT)
    for nb in LESSONS:   # what the sync wrote is there: both badges, and the clone URL
        text = nb.read_text()
        rel = nb.relative_to(ROOT).as_posix()
        assert json.dumps(S.badges(info, rel))[1:-1] in text, nb.name
        assert json.dumps(f'or "{info["git_url"]}"')[1:-1] in text, nb.name
    readme = (ROOT / "README.md").read_text()
    for nb in LESSONS:
        rel = nb.relative_to(ROOT).as_posix()
        assert S.colab_url(info, rel) in readme and S.kaggle_url(info, rel) in readme, rel


def test_readme_installs_that_work_today():
    readme = (ROOT / "README.md").read_text()
    git_url = S.repo_info(ROOT)["git_url"]
    assert f'pip install "git+{git_url}"' in readme
    assert f"git clone {git_url}" in readme and "make wheel" in readme
    for line in readme.splitlines():   # PyPI has no lessonkit yet
        if re.search(r"pip install (-U )?lessonkit\b(?![-.\w])", line): assert "once published" in line, line


def test_a_new_name_reaches_every_url(tmp_path):
    "Rename the repository in settings.ini of a copy: --check reports every file, the sync rewrites them all."
    for rel in ["settings.ini", "README.md", "nbs/lessons", "tools/sync_repo_urls.py"]:
        src, dst = ROOT / rel, tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    ini = tmp_path / "settings.ini"
    text = re.sub(r"(?m)^user = .*$", "user = a-fork", ini.read_text())
    ini.write_text(re.sub(r"(?m)^branch = .*$", "branch = dev", text))
    tool = [sys.executable, str(tmp_path / "tools" / "sync_repo_urls.py")]
    r = subprocess.run(tool + ["--check"], capture_output=True, text=True)
    assert r.returncode == 1 and "make badges" in r.stderr, r
    expected = {"README.md"} | {nb.relative_to(ROOT).as_posix() for nb in LESSONS}
    assert {l.split(":")[0] for l in r.stdout.splitlines()} == expected, r.stdout
    assert subprocess.run(tool, capture_output=True, text=True).returncode == 0
    assert subprocess.run(tool + ["--check"], capture_output=True, text=True).returncode == 0
    for rel in expected:
        text = (tmp_path / rel).read_text()
        assert "github.com/a-fork/lessonkit" in text and "/blob/dev/" in text, rel
        assert not re.search(r"github\.com/lessonkit/lessonkit|/blob/main/", text), rel   # nothing left behind
    # a badge link to a notebook that doesn't exist is reported
    (tmp_path / "nbs" / "lessons" / "01_pets.ipynb").rename(tmp_path / "nbs" / "lessons" / "01_cats.ipynb")
    _, problems = S.sync(tmp_path, write=False)
    assert any("README.md" in p and "01_pets.ipynb" in p for p in problems), problems
