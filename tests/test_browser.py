"""lessonkit's widgets in a real browser: Voila serves tests/browser/widgets.ipynb, headless Chromium (driven by
Playwright) opens it once, and each test clicks, types or chooses a file in one widget and checks what it shows:
the mistakes browser, the LR-finder explorer, upload-and-predict and the image cleaner.

Under the notebook test runner widgets only exist as Python state; these tests check the other half -- that the
widgets render in a browser and that a click in the page reaches the Python callbacks and comes back as new
content. They need Debian's chromium (`tools/setup_browser.sh`, run by `make test`) and voila + playwright (the
`dev` extra). Playwright drives the system Chromium through `executable_path`; `playwright install` is never used.
If anything is missing, or a widget does not render or react, the tests FAIL: they do not skip.

Screenshots go to tests/artifacts/ (gitignored): mistakes_browser_start.png, _next.png, _birman.png,
lr_find_explorer.png, upload_predict.png, image_cleaner.png.
"""
import os, re, secrets, shutil, signal, socket, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path

import pytest

from chromium_launch import chromium

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "tests" / "browser" / "widgets.ipynb"
ARTIFACTS = ROOT / "tests" / "artifacts"
SERVER_START_S, RENDER_S, REACT_S = 60, 60, 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen):
    "Stop the server we started, by its PID (and its kernels, which share its new process group)."
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # jupyter_server shuts its kernels down cleanly on SIGINT/SIGTERM
        try: proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try: proc.wait(5)
            except subprocess.TimeoutExpired: proc.kill(); proc.wait(5)
    try: os.killpg(proc.pid, signal.SIGKILL)  # any kernel left behind in the group we created
    except ProcessLookupError: pass


@pytest.fixture(scope="module")
def voila_url(tmp_path_factory):
    "Start Voila on 127.0.0.1 with a token and private Jupyter dirs; yield the notebook's URL; stop it."
    tmp_path = tmp_path_factory.mktemp("voila")
    voila = Path(sys.executable).with_name("voila")
    assert voila.exists(), f"voila is not installed in {Path(sys.executable).parent}: pip install -e '.[dev]'"
    env = dict(os.environ, PYTHONPATH=str(ROOT), LESSONKIT_ROOT=str(ROOT), MPLBACKEND="Agg",
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_DATA_DIR=str(tmp_path / "data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), IPYTHONDIR=str(tmp_path / "ipython"),
               MPLCONFIGDIR=str(tmp_path / "mpl"), JUPYTER_PLATFORM_DIRS="1")
    env.pop("IN_TEST", None)  # the notebook runs as a user's would
    port, token = _free_port(), secrets.token_hex(16)
    log = open(tmp_path / "voila.log", "w")
    proc = subprocess.Popen([str(voila), str(NOTEBOOK), "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1",
                             f"--token={token}", "--show_tracebacks=True"],
                            cwd=NOTEBOOK.parent, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/?token={token}"
    t0 = time.monotonic()
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"voila exited with {proc.returncode}:\n{(tmp_path / 'voila.log').read_text()[-3000:]}")
            try:  # any HTTP answer means it is listening (Voila answers this path with 403: fine)
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except urllib.error.HTTPError:
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"voila did not answer within {SERVER_START_S}s:\n"
                                f"{(tmp_path / 'voila.log').read_text()[-3000:]}")
                time.sleep(0.3)
        print(f"voila listening after {time.monotonic() - t0:.1f}s")
        yield url
    finally:
        _stop(proc)
        log.close()
        print((tmp_path / "voila.log").read_text()[-2000:])


@pytest.fixture(scope="module")
def page(tmp_path_factory, voila_url):
    "The widgets notebook, opened once in a fresh headless Chromium (system chromium, private profile)."
    tmp_path = tmp_path_factory.mktemp("chrome")
    with chromium(tmp_path / "chrome-profile", 1100, 900) as ctx:
        pg = ctx.new_page()
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.js_errors = errors
        _open(pg, voila_url)
        yield pg
        assert not errors, errors


def _open(pg, url: str):
    "Load the notebook in Voila (which runs it) and wait until every widget has rendered."
    t0 = time.monotonic()
    ARTIFACTS.mkdir(exist_ok=True)
    pg.goto(url, wait_until="domcontentloaded", timeout=RENDER_S * 1000)
    try:
        for root in (".lessonkit-mistakes", ".lessonkit-lrfind", ".lessonkit-upload", ".lessonkit-cleaner"):
            pg.wait_for_selector(root, state="visible", timeout=RENDER_S * 1000)
        pg.wait_for_function("() => document.querySelectorAll('.lessonkit-mistakes img').length == 2",
                             timeout=REACT_S * 1000)
    except Exception:
        pg.screenshot(path=str(ARTIFACTS / "widgets_failed.png"), full_page=True)
        raise AssertionError(f"the widgets did not render; page text:\n{pg.inner_text('body')[:3000]}\n"
                             f"JS errors: {pg.js_errors}")
    print(f"widgets rendered {time.monotonic() - t0:.1f}s after page.goto")


def _text(s: str) -> str:
    "Text as Python wrote it: ipywidgets shows spaces in option labels as no-break spaces."
    return s.replace("\xa0", " ")


def _options(select) -> list[str]:
    "The option labels of a <select>, as written in Python."
    return [_text(o) for o in select.locator("option").all_inner_texts()]


def _images_loaded(pg, root: str) -> list[int]:
    "Natural widths of the images inside `root` (0 = not decoded)."
    return pg.eval_on_selector_all(f"{root} img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")


def test_mistakes_browser_renders_and_reacts(page):
    t0 = time.monotonic()
    root = ".lessonkit-mistakes"
    label = page.locator(f"{root} .lessonkit-count")
    # Rendered: the count label, two dropdowns with the class counts, two decoded photos with captions.
    assert _text(label.inner_text()) == "4 mistakes (actual any, predicted any) · page 1 of 2 · showing 1-2"
    selects = page.locator(f"{root} select")
    assert selects.count() == 2
    assert _options(selects.nth(0))[:3] == ["(any) · 4 mistakes", "Abyssinian · 2 wrong of 3", "Bengal · 1 wrong of 3"]
    page.wait_for_function(f"() => [...document.querySelectorAll('{root} img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=REACT_S * 1000)
    assert all(w > 0 for w in _images_loaded(page, root))
    captions = [_text(c) for c in page.locator(f"{root} .lessonkit-caption").all_inner_texts()]
    assert [c.splitlines()[1:3] for c in captions] == [["predicted: Bengal 0.70", "actual: Abyssinian 0.04"]] * 2, captions
    assert page.locator(f"{root} img").count() == 2
    outside = page.eval_on_selector_all("img", "els => els.filter(e => !e.closest('.lessonkit-mistakes, .lessonkit-lrfind, "
                                               ".lessonkit-upload, .lessonkit-cleaner')).length")
    assert outside == 0  # the widgets only: no static fallback picture beside any of them
    page.screenshot(path=str(ARTIFACTS / "mistakes_browser_start.png"), full_page=True)

    # A click on Next goes to the second page: new label, new captions.
    page.locator(root).get_by_role("button", name=re.compile("Next")).click()
    page.wait_for_function(f"() => document.querySelector('{root} .lessonkit-count').innerText.includes('page 2 of 2')",
                           timeout=REACT_S * 1000)
    captions = [_text(c) for c in page.locator(f"{root} .lessonkit-caption").all_inner_texts()]
    assert [c.splitlines()[0] for c in captions] == ["Bengal_149.jpg", "Birman_153.jpg"], captions
    assert [c.splitlines()[2] for c in captions] == ["actual: Bengal 0.04", "actual: Birman 0.04"], captions
    assert page.locator(root).get_by_role("button", name=re.compile("Next")).is_disabled()
    page.screenshot(path=str(ARTIFACTS / "mistakes_browser_next.png"), full_page=True)

    # Choosing an actual class in the dropdown narrows the selection and refills the predicted dropdown.
    selects.nth(0).select_option(index=_options(selects.nth(0)).index("Birman · 1 wrong of 3"))
    page.wait_for_function(f"() => document.querySelector('{root} .lessonkit-count').innerText.startsWith('1 mistake ')",
                           timeout=REACT_S * 1000)
    assert _text(label.inner_text()) == "1 mistake (actual Birman, predicted any) · page 1 of 1 · showing 1-1"
    captions = [_text(c) for c in page.locator(f"{root} .lessonkit-caption").all_inner_texts()]
    assert len(captions) == 1 and captions[0].splitlines()[:3] == ["Birman_153.jpg", "predicted: Ragdoll 0.70",
                                                                   "actual: Birman 0.04"], captions
    assert _options(selects.nth(1)) == ["(any) · 1 wrong", "Birman · 2 (correct)", "Ragdoll · 1"]
    page.wait_for_function(f"() => [...document.querySelectorAll('{root} img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=REACT_S * 1000)
    page.screenshot(path=str(ARTIFACTS / "mistakes_browser_birman.png"), full_page=True)
    assert not page.js_errors, page.js_errors
    print(f"mistakes browser: {time.monotonic() - t0:.1f}s")


def _explorer_state(page, root: str) -> tuple[str, str]:
    "The slider's readout and the label under it."
    return (_text(page.locator(f"{root} .widget-readout").inner_text()),
            _text(page.locator(f"{root} .lessonkit-lr-info").inner_text()))


def test_lr_find_explorer_slider_label_and_chart_agree(page):
    root = ".lessonkit-lrfind"
    readout, info = _explorer_state(page, root)
    assert readout == "5.01e-04" and info.startswith("lr 5.01e-04: loss "), (readout, info)  # the valley
    # The chart is drawn at twice the pixels it is shown at: sharp, not an upscaled small image.
    img = page.locator(f"{root} img")
    page.wait_for_function(f"() => document.querySelector('{root} img').naturalWidth > 0", timeout=REACT_S * 1000)
    natural, shown = img.evaluate("i => [i.naturalWidth, i.naturalHeight]"), img.evaluate("i => [i.clientWidth, i.clientHeight]")
    assert shown == [600, 360] and natural == [1200, 720], (natural, shown)
    before = img.evaluate("i => i.src")
    # A button moves the slider, and the label follows with the same rate, written the same way.
    page.locator(root).get_by_role("button", name=re.compile("^minimum")).click()
    page.wait_for_function(f"() => document.querySelector('{root} .lessonkit-lr-info').innerText.startsWith('lr 1.00e-02')",
                           timeout=REACT_S * 1000)
    assert _explorer_state(page, root)[0] == "1.00e-02"
    page.wait_for_function(f"src => document.querySelector('{root} img').src != src", arg=before, timeout=REACT_S * 1000)
    # The keyboard moves the slider one recorded rate: label, readout and chart follow.
    before = img.evaluate("i => i.src")
    page.locator(f"{root} .noUi-handle").press("ArrowRight")
    page.wait_for_function(f"() => document.querySelector('{root} .lessonkit-lr-info').innerText.startsWith('lr 1.26e-02')",
                           timeout=REACT_S * 1000)
    readout, info = _explorer_state(page, root)
    assert readout == "1.26e-02" and info.startswith(f"lr {readout}: loss "), (readout, info)
    page.wait_for_function(f"src => document.querySelector('{root} img').src != src", arg=before, timeout=REACT_S * 1000)
    page.locator(root).screenshot(path=str(ARTIFACTS / "lr_find_explorer.png"))


def test_upload_and_predict_from_a_chosen_file(page):
    root = ".lessonkit-upload"
    photo = sorted((ROOT / "data" / "pets" / "images").glob("Birman_*.jpg"))[0]
    with page.expect_file_chooser() as chooser:  # the upload button opens the file dialog; choose a photo in it
        page.locator(f"{root} .widget-upload").click()
    chooser.value.set_files(str(photo))
    page.wait_for_function(f"() => document.querySelector('{root}').innerText.includes('predicted Birman')",
                           timeout=REACT_S * 1000)
    assert f"{photo.name}: predicted Birman (70.0%)" in _text(page.locator(root).inner_text())
    page.wait_for_function(f"() => [...document.querySelectorAll('{root} img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=REACT_S * 1000)
    assert page.locator(f"{root} img").count() == 2  # the photo and the bar chart
    page.locator(root).screenshot(path=str(ARTIFACTS / "upload_predict.png"))


def test_image_cleaner_marks_a_file(page):
    root = ".lessonkit-cleaner"
    summary = lambda: _text(page.locator(root).inner_text())
    assert "marked: 0 to delete, 0 to relabel" in summary()
    page.locator(f"{root} select").nth(1).select_option(label="delete")  # the first image (the 0th: the class filter)
    page.wait_for_function(f"() => document.querySelector('{root}').innerText.includes('marked: 1 to delete')",
                           timeout=REACT_S * 1000)
    page.locator(root).get_by_role("button", name=re.compile("Next")).click()
    page.wait_for_function(f"() => document.querySelector('{root} .lessonkit-count').innerText.includes('page 2 of')",
                           timeout=REACT_S * 1000)
    assert "marked: 1 to delete" in summary()  # marks survive paging
    page.locator(root).screenshot(path=str(ARTIFACTS / "image_cleaner.png"))
