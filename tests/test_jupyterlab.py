"""The lessons as a learner sees them: JupyterLab runs a lesson through its own UI (menu Run > Run All Cells), in a
real Chromium driven by Playwright, and the test reads the rendered page.

Set-up, as the README's "Opening the lessons" says a learner does it: the command it gives (read from README.md:
`.venv/bin/jupyter lab nbs/lessons/`), run from the root of a copy of the repository's layout (a temporary folder
holding `nbs/lessons/<lesson>` and a link to `data/`), with the test's own plumbing added: 127.0.0.1, a free port, a
random token, `--no-browser`, `--allow-root`, `--LabApp.expose_app_in_browser` (the test reads which cells ran from
the page's notebook model), private Jupyter config/data/runtime/settings/workspace folders (the settings turn
JupyterLab's news and update checks off). The kernel imports this checkout's lessonkit (`PYTHONPATH`), runs with no
`IN_TEST` (so progress bars, the live loss plot and the widgets are the ones a learner gets) and, with no GPU, runs
the lesson in sample mode. The server runs in its own process group and is stopped by its PID, as is any kernel it
leaves. Chromium is Debian's (`tools/setup_browser.sh`), driven through `executable_path` (never `playwright
install`). Anything missing makes the test FAIL: it never skips.

Which lessons: Pets (01) always -- it is the one that runs in CI. The others run when asked for with
`LESSONKIT_BROWSER_LESSONS`: `all`, or names (`02_cifar10,03_vehicles` or `cifar10`), or paths to notebooks
(e.g. a copy of a lesson under development); Pets runs too.

After Run All, with the kernel idle, the test asserts from the DOM:

- every code cell ran (has an execution count, read from the page's notebook model: a cell whose source is collapsed
  shows no prompt), and no output is an error: no stderr output and no
  rendered text with a traceback or an exception name (`...Error`);
- no output shows a raw repr: `<Figure size ...>`, `LRFindResult(`, `<... object at 0x...>`;
- every cell *meant to draw* shows at least one decoded image. The rule, read from each code cell's source with
  comments and strings left out, in cells for the reader (not `#| hide`: the lesson's checks; not `#| export`:
  definitions): the cell calls `show_batch(`, `plot(` or `plot_<something>(` (e.g.
  `learn.recorder.plot_loss()`, `interp.plot_top_losses(9)`, `lr.plot()`), `lr_find(` (its plot, or an explorer's
  chart), a widget (`mistakes_browser(`, `lr_find_explorer(`, `upload_predict(`, `image_cleaner(`), or trains
  (`fit_one_cycle(`, `fit(`, `fine_tune(`: the live loss plot, unless the cell calls `remove_cb(`);
- a cell that calls `lr_find(` shows exactly one LR-finder figure: exactly one image among its outputs, static plot
  and widget chart counted together;
- no progress bar is left in the error state (ipywidgets' `progress-bar-danger`, which tqdm sets on a bar closed
  before its end);
- each widget the lesson calls (found from the source the same way) is rendered once in each cell that calls it, and
  responds to a real click or file choice: the mistakes browser's Next button shows the next page; each LR-finder
  explorer's suggestion buttons move the slider and the label together (and its chart is drawn at twice its shown
  size: sharp); the image cleaner marks a file 'delete' from its dropdown; upload-and-predict shows a label for a
  photo chosen through its file input (the file dialog the upload button opens).

Screenshots go to tests/artifacts/ (gitignored): jupyterlab_<lesson>_cell<NN>.png for each cell meant to draw,
jupyterlab_<lesson>_cell<NN>_<widget>.png after each widget's interaction, and jupyterlab_<lesson>_failed.png when the
run fails.
"""
import io, json, os, re, secrets, shlex, shutil, signal, socket, subprocess, sys, time, tokenize, urllib.error, urllib.request
from pathlib import Path

import pytest

from chromium_launch import chromium

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "nbs" / "lessons"
ARTIFACTS = ROOT / "tests" / "artifacts"
SERVER_START_S, OPEN_S, RUN_S, REACT_S = 120, 180, 1800, 60  # generous: the CI machine is small and may be busy

WIDGETS = {"mistakes_browser": ".lessonkit-mistakes", "lr_find_explorer": ".lessonkit-lrfind",
           "upload_predict": ".lessonkit-upload", "image_cleaner": ".lessonkit-cleaner"}
DRAWS = r"show_batch|plot|plot_\w+|lr_find|fit_one_cycle|fit|fine_tune|" + "|".join(WIDGETS)
RAW_REPRS = re.compile(r"<Figure size|LRFindResult\(|<[\w.]+ object at 0x")
ERROR_TEXT = re.compile(r"Traceback|\b\w*Error\b")


def _selected_lessons() -> list[Path]:
    "Pets, and what $LESSONKIT_BROWSER_LESSONS asks for (`all`, lesson names, or notebook paths)."
    chosen = [LESSONS / "01_pets.ipynb"]
    for item in os.environ.get("LESSONKIT_BROWSER_LESSONS", "").replace(",", " ").split():
        if item == "all": chosen += sorted(LESSONS.glob("*.ipynb"))
        elif item.endswith(".ipynb") and Path(item).is_file(): chosen.append(Path(item).resolve())
        else:
            found = sorted(LESSONS.glob(f"*{item}*.ipynb"))
            if not found: raise ValueError(f"LESSONKIT_BROWSER_LESSONS: no lesson matches {item!r} in {LESSONS}")
            chosen += found
    return list(dict.fromkeys(chosen))


# --- what a cell is meant to show, from its source -----------------------------------------------------------------

def _code_only(src: str) -> str:
    "The source without comments and string literals (so a name in a comment or a string calls nothing)."
    lines = [l for l in src.splitlines() if not l.lstrip().startswith(("%", "!"))]  # IPython magics don't tokenize
    try:
        toks = [t for t in tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline)
                if t.type not in (tokenize.COMMENT, tokenize.STRING)]
        return tokenize.untokenize((t.type, t.string) for t in toks)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return "\n".join(l.split("#")[0] for l in lines)

def _calls(src: str, names: str) -> set[str]:
    "The functions (among the regex alternatives `names`) that `src` calls; a `def` or an import is no call."
    code = _code_only(src)
    return {m.group(1) for m in re.finditer(rf"(?<![\w])({names})\s*\(", code)
            if not re.search(r"\bdef\s*$", code[:m.start()])}

def _for_the_reader(src: str) -> bool:
    "Not a `#| hide` cell (the lesson's checks) or an `#| export` cell (definitions: a call in a body runs later)."
    return not re.search(r"^#\|\s*(hide|export)\b", src, re.M)

def _meant_to_draw(src: str) -> bool:
    if not _for_the_reader(src): return False
    calls = _calls(src, DRAWS)
    if calls <= {"fit_one_cycle", "fit", "fine_tune"} and "remove_cb" in _code_only(src): return False
    return bool(calls)


# --- the server and the browser ------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kernels_started_by(runtime: Path) -> list[int]:
    "PIDs of kernels whose connection file is in `runtime` (our server's private runtime folder, so only ours)."
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and str(runtime) in (d / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(d.name))
        except OSError: pass
    return pids


def _stop(proc: subprocess.Popen, runtime: Path):
    """Stop the server we started, by its PID; then any kernel of it still alive, by its PID (jupyter_client starts
    each kernel in a session of its own, so the server's process group does not hold them)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # jupyter_server shuts its kernels down cleanly on SIGINT/SIGTERM
        try: proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try: proc.wait(5)
            except subprocess.TimeoutExpired: proc.kill(); proc.wait(5)
    try: os.killpg(proc.pid, signal.SIGKILL)  # anything else left in the group we created
    except ProcessLookupError: pass
    for pid in _kernels_started_by(runtime):
        try: os.kill(pid, signal.SIGKILL)
        except ProcessLookupError: pass


def _readme_command() -> list[str]:
    "The command the README's 'Opening the lessons' gives for JupyterLab (`.venv/bin/jupyter lab nbs/lessons/`)."
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"\*\*JupyterLab\*\*.*?`\.venv/bin/(jupyter lab [^`]*)`", readme, re.S)
    assert m, "README.md: the JupyterLab bullet of 'Opening the lessons' gives no `.venv/bin/jupyter lab ...` command"
    command = shlex.split(m.group(1))
    assert "nbs/lessons/" in command or "nbs/lessons" in command, f"README.md's command {command} opens no lessons"
    return command


class Lab:
    "A running JupyterLab: its URL, token and root folder (`<course>/nbs/lessons`)."
    def __init__(self, url: str, token: str, root: Path): self.url, self.token, self.root = url, token, root

    def api(self, method: str, path: str):
        req = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self, name: str):
        "Free the memory a finished lesson's kernel holds (the next lesson gets a fresh one)."
        for s in self.api("GET", "sessions"):
            if s["path"].endswith(name): self.api("DELETE", f"sessions/{s['id']}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "`jupyter lab nbs/lessons/` in a temporary copy of the repository's layout, on 127.0.0.1 with a token."
    tmp = tmp_path_factory.mktemp("jupyterlab")
    course = tmp / "course"
    (course / "nbs" / "lessons").mkdir(parents=True)
    (course / "data").symlink_to(ROOT / "data", target_is_directory=True)  # what sample mode reads
    for nb in _selected_lessons(): shutil.copy2(nb, course / "nbs" / "lessons" / nb.name)
    # No news, no update check (nothing to fetch offline, and no pop-up over the notebook).
    settings = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    command = _readme_command()
    jupyter = Path(sys.executable).with_name(command[0])
    assert jupyter.exists(), f"jupyter is not installed in {jupyter.parent}: pip install -e '.[dev]'"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               JUPYTER_CONFIG_DIR=str(tmp / "config"), JUPYTER_DATA_DIR=str(tmp / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp / "runtime"), IPYTHONDIR=str(tmp / "ipython"), MPLCONFIGDIR=str(tmp / "mpl"),
               JUPYTERLAB_SETTINGS_DIR=str(tmp / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
               JUPYTER_PLATFORM_DIRS="1", LESSONKIT_HOME=str(tmp / "lessonkit-home"))
    for k in ("IN_TEST", "PYTEST_CURRENT_TEST", "MPLBACKEND", "LESSONKIT_MODE"):
        env.pop(k, None)  # the kernel runs as a learner's does: live progress, widgets, the inline backend
    port, token = _free_port(), secrets.token_hex(16)
    log_path = tmp / "jupyterlab.log"
    log = open(log_path, "w")
    t0 = time.monotonic()
    proc = subprocess.Popen([str(jupyter), *command[1:],  # the README's command, from the course's root
                             "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1", "--allow-root",
                             "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: which cells ran
                             f"--IdentityProvider.token={token}"],
                            cwd=course, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"jupyter lab exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"jupyter lab did not answer within {SERVER_START_S}s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.3)
        print(f"jupyter lab listening after {time.monotonic() - t0:.1f}s")
        yield Lab(url, token, course / "nbs" / "lessons")
    finally:
        _stop(proc, tmp / "runtime")
        log.close()
        print(log_path.read_text()[-2000:])


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    "A fresh headless Chromium (Debian's, private profile)."
    tmp = tmp_path_factory.mktemp("chrome")
    with chromium(tmp / "chrome-profile", 1400, 1200) as ctx:
        ctx.set_default_timeout(REACT_S * 1000)  # no Playwright call waits longer than this unless it says so
        yield ctx


# --- reading the notebook's DOM ------------------------------------------------------------------------------------

# The notebook's model in the page (`--LabApp.expose_app_in_browser`: window.jupyterapp) says which cells ran: what the
# prompts show, also for a cell whose source is collapsed (its prompt is then not in the page).
PANEL_JS = """function panel(name) {
    for (const w of window.jupyterapp.shell.widgets('main')) if (w.context && w.context.path.endsWith(name)) return w;
    throw new Error('no notebook ' + name + ' is open');
}"""

CELLS_JS = """name => { %s
  const model = panel(name).content.model;
  return [...document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell')].map((c, i) => ({
    code: c.classList.contains('jp-CodeCell'),
    count: model.cells.get(i).executionCount ?? null,
    outputs: [...c.querySelectorAll('.jp-OutputArea-output')].map(o => ({mime: o.dataset.mimeType || '',
        rendered_text: o.classList.contains('jp-RenderedText'), text: o.textContent})),
    images: [...c.querySelectorAll('.jp-Cell-outputArea img')].map(i => i.complete ? i.naturalWidth : 0),
    danger: c.querySelectorAll('.jp-Cell-outputArea .progress-bar-danger, .jp-Cell-outputArea [class*="bar-danger"]').length,
  }));
}""" % PANEL_JS

STATUS_JS = """name => { %s
  const p = panel(name), cells = [...p.content.model.cells].filter(c => c.type === 'code');
  return {
    kernel: p.sessionContext.kernelDisplayStatus,
    counts: cells.map(c => c.executionCount ?? null),
    running: cells.filter(c => c.executionState === 'running').length,
    tracebacks: [...document.querySelectorAll('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
                 .filter(o => o.textContent.includes('Traceback')).length,
    dialog: document.querySelector('.jp-Dialog')?.textContent ?? null,
  };
}""" % PANEL_JS


def _open(page, lab: Lab, nb: Path, n_cells: int):
    "Open the notebook in a workspace of its own (nothing else restored beside it) and wait for its kernel."
    page.goto(f"{lab.url}/lab/workspaces/{nb.stem}/tree/{nb.name}?token={lab.token}", wait_until="domcontentloaded",
              timeout=OPEN_S * 1000)
    page.wait_for_function(f"() => document.querySelectorAll('.jp-NotebookPanel .jp-Notebook .jp-Cell').length == {n_cells}",
                           timeout=OPEN_S * 1000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=OPEN_S * 1000)


def _accept_kernel_dialog(page, dialog: str):
    "A fresh server may ask which kernel to start: take the notebook's own (the dialog's default). Any other fails."
    if "Select Kernel" not in dialog: raise AssertionError(f"JupyterLab opened a dialog: {dialog[:500]}")
    page.locator(".jp-Dialog .jp-mod-accept").click()


def _run_all(page, name: str, n_code: int) -> float:
    "Menu Run > Run All Cells; wait until every cell ran, or one failed, and the kernel is idle. Returns seconds."
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
    t0, deadline, started = time.monotonic(), time.monotonic() + RUN_S, False
    while True:
        st = page.evaluate(STATUS_JS, name)
        if st["dialog"] is not None: _accept_kernel_dialog(page, st["dialog"])
        ran = sum(c is not None for c in st["counts"])
        started = started or st["running"] > 0 or ran > 0
        if started and st["kernel"] == "idle" and not st["running"] and (ran == n_code or st["tracebacks"]): break
        if time.monotonic() > deadline:
            page.screenshot(path=str(ARTIFACTS / f"jupyterlab_{Path(name).stem}_failed.png"))
            raise AssertionError(f"{name}: Run All did not finish within {RUN_S}s ({ran} of {n_code} cells ran, "
                                 f"kernel {st['kernel']!r})")
        time.sleep(1)
    return time.monotonic() - t0


def _wait_images(page, timeout_s: float = REACT_S):
    "Widgets set their images after they render: wait until every image in the outputs is decoded."
    page.wait_for_function("() => [...document.querySelectorAll('.jp-Cell-outputArea img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=timeout_s * 1000)


# --- the widgets, each clicked as a learner would ------------------------------------------------------------------

def _text(s: str) -> str: return s.replace("\xa0", " ")  # ipywidgets shows spaces in labels as no-break spaces


def _wait_text(page, root, selector: str, pattern: str):
    "Wait until the text of `selector` inside `root` (a locator) matches the regex `pattern`."
    el = root.locator(selector).first
    deadline = time.monotonic() + REACT_S
    while not re.search(pattern, _text(el.text_content() or "")):
        if time.monotonic() > deadline:
            raise AssertionError(f"{selector}: {_text(el.text_content() or '')!r} never matched {pattern!r}")
        page.wait_for_timeout(200)
    return _text(el.text_content())


def _try_mistakes_browser(page, root):
    count = _text(root.locator(".lessonkit-count").text_content())
    m = re.search(r"page 1 of (\d+)", count)
    assert m, f"mistakes browser: unexpected count label {count!r}"
    assert int(m.group(1)) > 1, f"mistakes browser: only one page of mistakes ({count!r}): Next cannot be tried"
    before = [_text(c) for c in root.locator(".lessonkit-caption").all_text_contents()]
    root.get_by_role("button", name=re.compile("Next")).click()
    _wait_text(page, root, ".lessonkit-count", r"page 2 of ")
    after = [_text(c) for c in root.locator(".lessonkit-caption").all_text_contents()]
    assert after and after != before, f"mistakes browser: Next kept the same cards: {after}"


def _try_lr_find_explorer(page, root):
    readout, info = (_text(root.locator(s).text_content()) for s in (".widget-readout", ".lessonkit-lr-info"))
    assert info.startswith(f"lr {readout}:"), f"LR-finder explorer: slider reads {readout}, label says {info!r}"
    img = root.locator("img").first
    natural, shown = img.evaluate("i => [i.naturalWidth, i.clientWidth]")
    assert shown > 0 and natural >= 2 * shown, f"LR-finder explorer: chart {natural} px wide shown at {shown} px"
    buttons = root.locator("button")
    rates = [re.search(r"(\d\.\d+e[-+]\d+)", _text(b)) for b in buttons.all_text_contents()]
    assert any(rates), f"LR-finder explorer: no suggestion buttons ({buttons.all_text_contents()})"
    others = [i for i, r in enumerate(rates) if r and r.group(1) != readout]
    assert others, f"LR-finder explorer: every suggestion is at {readout}: no button can move the slider"
    for i in others[:2]:  # two buttons: the slider moves there, and back
        rate, src = rates[i].group(1), img.evaluate("i => i.src")
        buttons.nth(i).click()
        _wait_text(page, root, ".widget-readout", rf"^{re.escape(rate)}$")
        info = _wait_text(page, root, ".lessonkit-lr-info", rf"^lr {re.escape(rate)}: loss ")
        assert _text(root.locator(".widget-readout").text_content()) == rate, (rate, info)
        page.wait_for_function("([i, s]) => i.src != s", arg=[img.element_handle(), src], timeout=REACT_S * 1000)


def _try_image_cleaner(page, root):
    summary = re.search(r"marked: (\d+) to delete", _text(root.text_content()))
    assert summary, f"image cleaner: no 'marked: ...' summary in {_text(root.text_content())[:300]!r}"
    n0 = int(summary.group(1))
    root.locator("select").nth(1).select_option(label="delete")  # the first image's action (0th: the class filter)
    deadline = time.monotonic() + REACT_S
    while f"marked: {n0 + 1} to delete" not in _text(root.text_content()):
        if time.monotonic() > deadline: raise AssertionError(f"image cleaner: still {summary.group(0)!r} after marking a file")
        page.wait_for_timeout(200)


def _photo_for(nb: Path) -> Path:
    "A photo of the lesson's own subject if the bundled data has it (data/<name>), else any bundled photo."
    name = re.sub(r"^\d+_", "", nb.stem).split("_")[0]
    folder = next((d for d in (ROOT / "data").iterdir() if d.is_dir() and name.startswith(d.name)), ROOT / "data")
    return next(p for p in sorted(folder.rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def _try_upload_predict(page, root, photo: Path):
    with page.expect_file_chooser(timeout=REACT_S * 1000) as chooser:  # the button opens the file dialog
        root.locator(".widget-upload").click()
    chooser.value.set_files(str(photo))
    deadline = time.monotonic() + REACT_S
    while not re.search(rf"{re.escape(photo.name)}: predicted \S", _text(root.text_content())):
        if time.monotonic() > deadline:
            raise AssertionError(f"upload-and-predict: no label for {photo.name}: {_text(root.text_content())!r}")
        page.wait_for_timeout(200)


# --- the test ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lesson", _selected_lessons(), ids=lambda p: p.stem)
def test_lesson_in_jupyterlab(lesson: Path, lab: Lab, browser):
    nb = json.loads(lesson.read_text())
    cells = nb["cells"]
    sources = ["".join(c["source"]) if c["cell_type"] == "code" else "" for c in cells]
    code = [i for i, c in enumerate(cells) if c["cell_type"] == "code"]
    widget_cells = {w: [i for i in code if _for_the_reader(sources[i]) and w in _calls(sources[i], "|".join(WIDGETS))]
                    for w in WIDGETS}
    ARTIFACTS.mkdir(exist_ok=True)
    stem, page = lesson.stem, browser.new_page()
    js_errors = []
    page.on("pageerror", lambda e: js_errors.append(str(e)))
    try:
        t0 = time.monotonic()
        _open(page, lab, lab.root / lesson.name, len(cells))
        t_open = time.monotonic() - t0
        t_run = _run_all(page, lesson.name, len(code))
        print(f"{stem}: opened in {t_open:.1f}s, Run All took {t_run:.1f}s")

        dom = page.evaluate(CELLS_JS, lesson.name)
        assert len(dom) == len(cells), f"{len(dom)} cells on the page, {len(cells)} in {lesson.name}"
        problems = []
        for i in code:
            d, first = dom[i], sources[i].strip().splitlines()[0][:70] if sources[i].strip() else ""
            where = f"cell {i} ({first!r})"
            for o in d["outputs"]:
                if o["mime"] == "application/vnd.jupyter.stderr" or (o["rendered_text"] and ERROR_TEXT.search(o["text"])):
                    problems.append(f"{where}: error output: {o['text'][-1500:]}")
                if m := RAW_REPRS.search(o["text"]):
                    problems.append(f"{where}: raw repr in the output: ...{o['text'][max(0, m.start() - 40):m.end() + 60]}...")
            if d["count"] is None: problems.append(f"{where}: did not run (no execution count)")
            if d["danger"]: problems.append(f"{where}: a progress bar is left in the error state (red)")
        if problems: page.screenshot(path=str(ARTIFACTS / f"jupyterlab_{stem}_failed.png"))

        try: _wait_images(page)
        except Exception as e: problems.append(f"not every image in the outputs decoded: {e}")
        dom = page.evaluate(CELLS_JS, lesson.name)
        for i in code:
            where = f"cell {i} ({sources[i].strip().splitlines()[0][:70]!r})"
            imgs = dom[i]["images"]
            if _meant_to_draw(sources[i]):
                if not imgs or not all(imgs): problems.append(f"{where}: meant to draw, shows {len(imgs)} image(s) "
                                                              f"(decoded widths {imgs})")
                cell = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(i)
                cell.scroll_into_view_if_needed()
                cell.screenshot(path=str(ARTIFACTS / f"jupyterlab_{stem}_cell{i:02d}.png"))
            if _for_the_reader(sources[i]) and "lr_find" in _calls(sources[i], "lr_find") and len(imgs) != 1:
                problems.append(f"{where}: calls lr_find, shows {len(imgs)} images (one LR-finder figure expected)")

        photo = _photo_for(lesson)
        for w, at in widget_cells.items():
            for i in at:
                roots = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").nth(i).locator(WIDGETS[w])
                if roots.count() != 1:
                    problems.append(f"cell {i}: calls {w}, {roots.count()} rendered (one expected)")
                    continue
                roots.scroll_into_view_if_needed()
                try:
                    if w == "upload_predict": _try_upload_predict(page, roots, photo)
                    else: globals()[f"_try_{w}"](page, roots)
                except AssertionError as e: problems.append(f"cell {i}: {e}")
                roots.screenshot(path=str(ARTIFACTS / f"jupyterlab_{stem}_cell{i:02d}_{w}.png"))
        assert not problems, f"{stem}:\n" + "\n".join(problems)
        assert not js_errors, f"{stem}: JavaScript errors in the page: {js_errors}"
        print(f"{stem}: {sum(map(_meant_to_draw, sources))} drawing cells and "
              f"{ {w: len(at) for w, at in widget_cells.items() if at} } widgets checked, "
              f"{time.monotonic() - t0:.1f}s in all")
    finally:
        page.close()
        try: lab.shut_down_kernels(lesson.name)
        except OSError as e: print(f"could not shut the kernel down: {e}")
