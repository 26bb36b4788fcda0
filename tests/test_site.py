"""The course website (tools/build_site.py, `make site`) built and read in a real browser.

The test builds the site itself, into a temporary folder, from the executed lessons in runs/: tests/test_notebooks.py
runs before this file (pytest's order) and saves each lesson it runs there, so in CI the lessons are not run a second
time; a lesson with no fresh executed copy (this file run on its own) is run by the builder first (minutes).

Then: every `href`/`src` in the built HTML points at a file (and anchor) that exists; a local HTTP server serves the
site on 127.0.0.1 and headless Chromium (Debian's, driven by Playwright: see tests/test_browser.py) opens the home
page, follows the navigation to every lesson and checks that its figures load, that the LR-finder figure and the
results table are there, and that search finds `fit_one_cycle`. Every request to another host is blocked and
counted: there must be none. Screenshots go to tests/artifacts/site_*.png.
"""
import html, html.parser, http.server, re, sys, threading, time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from chromium_launch import chromium

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_site  # noqa: E402

ARTIFACTS = ROOT / "tests" / "artifacts"
LESSONS = sorted((ROOT / "nbs" / "lessons").glob("*.ipynb"))
LOAD_S = 30


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    t0 = time.monotonic()
    out = build_site.build(tmp_path_factory.mktemp("site") / "_site")
    print(f"site built in {time.monotonic() - t0:.1f}s")
    return out


class _Refs(html.parser.HTMLParser):
    "The ids of a page and the links and resources it names."
    def __init__(self):
        super().__init__()
        self.ids, self.refs = set(), []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for k in ("id", "name"):
            if a.get(k) and (k == "id" or tag == "a"): self.ids.add(a[k])
        for k in ("href", "src"):
            if a.get(k) is not None: self.refs.append((tag, k, a[k]))


def _parse(page: Path) -> _Refs:
    p = _Refs()
    p.feed(page.read_text(encoding="utf8"))
    return p


def test_site_pages_and_internal_links(site):
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.parts)   # _static: the theme's templates
    names = {p.relative_to(site).as_posix() for p in pages}
    assert {"index.html", "search.html", "genindex.html"} <= names
    assert {f"lessons/{nb.stem}.html" for nb in LESSONS} <= names
    assert {f"api/{nb.stem}.html" for nb in (ROOT / "nbs").glob("[0-9]*.ipynb")} <= names
    for lesson in LESSONS:   # a headless run shows each widget's static figure: no widget the static page can't run
        assert "application/vnd.jupyter.widget-view+json" not in (site / "lessons" / f"{lesson.stem}.html").read_text()
    parsed = {p: _parse(p) for p in pages}
    broken, outside_resources, checked = [], [], 0
    for page, refs in parsed.items():
        for tag, attr, ref in refs.refs:
            url = urlparse(ref)
            if url.scheme or ref.startswith("//"):
                # links out (GitHub, Colab, the sources' articles) are fine; a resource loaded from outside is not
                if attr == "src" or tag in ("link", "script"): outside_resources.append(f"{page.name}: <{tag} {attr}={ref}>")
                continue
            if ref.startswith(("mailto:", "javascript:")) or ref in ("", "#"): continue
            target = page if not url.path else (page.parent / unquote(url.path)).resolve()
            if target.is_dir(): target = target / "index.html"
            checked += 1
            if not target.is_file(): broken.append(f"{page.relative_to(site)}: {ref} (no such file)")
            elif url.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if unquote(url.fragment) not in ids: broken.append(f"{page.relative_to(site)}: {ref} (no such anchor)")
    print(f"{len(pages)} pages, {checked} internal links and resources checked")
    assert checked > 500
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:40])
    assert not outside_resources, "\n".join(outside_resources[:40])


def _module_pages() -> dict:
    "Module name -> the stem of its notebook (its page is api/<stem>.html)."
    return {m[1]: nb.stem for nb in (ROOT / "nbs").glob("*.ipynb")
            for m in [re.search(r"#\|\s*default_exp\s+(\w+)", nb.read_text(encoding="utf8"))] if m}


def _text(page: Path) -> str:
    "A page's text, as one line."
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf8"))).split())


def test_api_reference_shows_signatures_and_docstrings(site):
    "Every public function and class of a module has its anchor, signature and docstring on the module's page."
    import ast
    pages = _module_pages()
    for mod in ["learner", "colab", "data", "schedule"]:
        page = pages[mod]
        tree = ast.parse((ROOT / "lessonkit" / f"{mod}.py").read_text(encoding="utf8"))
        public = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                      and getattr(n.targets[0], "id", "") == "__all__")
        raw, text = (site / "api" / f"{page}.html").read_text(encoding="utf8"), _text(site / "api" / f"{page}.html")
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in public:
                assert f'id="lessonkit.{mod}.{node.name}"' in raw, (mod, node.name)
                doc = "".join(ast.get_docstring(node).replace("`", "").split())[:50]   # spacing aside
                assert doc in "".join(text.split()), (mod, node.name, doc)
    learner = "".join(_text(site / "api" / f"{pages['learner']}.html").split())
    assert "lessonkit.learner.vision_learner(dls,arch:" in learner   # a signature
    colab = _text(site / "api" / f"{pages['colab']}.html")   # nbdev's parameter comments, as a parameter list
    assert re.search(r"Parameters : clone (–|--) the setup cell's clone of the repository", colab)
    assert re.search(r"quiet (–|--) print nothing", colab)   # its comment is after `) -> None:`
    assert 'href="../_modules/lessonkit/learner.html' in (site / "api" / f"{pages['learner']}.html").read_text(encoding="utf8")


def _serve(folder: Path):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k): super().__init__(*a, directory=str(folder), **k)
        def log_message(self, *a): pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture(scope="module")
def browser_page(site, tmp_path_factory):
    "A Chromium page whose requests outside 127.0.0.1 are blocked and counted, with the site served on 127.0.0.1."
    srv = _serve(site)
    base = f"http://127.0.0.1:{srv.server_address[1]}/"
    with chromium(tmp_path_factory.mktemp("chrome"), 1280, 900) as ctx:
        outside, failed, errors = [], [], []

        def route(r):
            if r.request.url.startswith(base) or r.request.url.startswith(("data:", "blob:")): r.continue_()
            else: outside.append(r.request.url); r.abort()
        ctx.route("**/*", route)
        pg = ctx.new_page()
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        pg.base, pg.outside, pg.failed, pg.errors = base, outside, failed, errors
        try: yield pg
        finally: srv.shutdown()


def _figures_loaded(pg) -> list[int]:
    "naturalWidth of every image in the page's article (0: did not load)."
    pg.wait_for_function("() => [...document.querySelectorAll('article img')].every(i => i.complete)", timeout=LOAD_S * 1000)
    return pg.eval_on_selector_all("article img", "els => els.map(e => e.naturalWidth)")


def _cell_outputs(pg, code: str, regex: bool = False) -> list[dict]:
    "For each code cell whose source contains `code` (or matches it, a JS regex): its output's text and images' naturalWidth."
    return pg.evaluate("""([code, regex]) => [...document.querySelectorAll('div.cell')]
        .filter(c => { const src = (c.querySelector('.cell_input') || {innerText: ''}).innerText;
                       return regex ? new RegExp(code, 'm').test(src) : src.includes(code); })
        .map(c => { const o = c.querySelector('.cell_output');
                    return {text: o ? o.innerText : '', tables: o ? o.querySelectorAll('table').length : 0,
                            images: o ? [...o.querySelectorAll('img')].map(i => i.naturalWidth) : []}; })""", [code, regex])


def test_site_in_browser(browser_page):
    pg, t0 = browser_page, time.monotonic()
    ARTIFACTS.mkdir(exist_ok=True)
    pg.goto(pg.base, wait_until="load", timeout=LOAD_S * 1000)
    assert "lessonkit" in pg.title()
    body = pg.inner_text("article")
    assert "transfer learning" in body and "make site" in body   # the README's story, and how to build the site
    assert all(w > 0 for w in _figures_loaded(pg))               # the badges, from the site itself
    pg.screenshot(path=str(ARTIFACTS / "site_home.png"), full_page=False)

    nav = pg.eval_on_selector_all("nav.bd-docs-nav a.reference.internal",
                                  "els => els.map(e => [e.innerText.trim(), e.getAttribute('href')])")
    lesson_links = [(t, h) for t, h in nav if "lessons/" in h]
    assert [Path(urlparse(h).path).stem for _, h in lesson_links] == [nb.stem for nb in LESSONS], nav
    assert {Path(urlparse(h).path).stem for _, h in nav if "api/" in h} >= set(_module_pages().values()), nav

    for (title, href), nb in zip(lesson_links, LESSONS):
        pg.goto(pg.base, wait_until="load", timeout=LOAD_S * 1000)
        pg.locator("nav.bd-docs-nav").get_by_role("link", name=title, exact=True).click()
        pg.wait_for_url(f"**/lessons/{nb.stem}.html", timeout=LOAD_S * 1000)
        widths = _figures_loaded(pg)
        outputs = pg.eval_on_selector_all("div.cell_output img", "els => els.length")
        assert outputs >= 3 and all(w > 0 for w in widths), (nb.stem, outputs, widths)   # plots, all decoded
        source = nb.read_text(encoding="utf8")
        if "lr_find(" in source:
            # cells that call it (a line starting `learn.lr_find(` or `x = learn.lr_find(`), not text that names it
            lr = _cell_outputs(pg, r"^\s*([\w, ]+=\s*)?learn\.lr_find\(", regex=True)
            assert lr and all(any(w > 0 for w in c["images"]) for c in lr), (nb.stem, lr)   # each LR finder shows its figure
        results = _cell_outputs(pg, "record_results(")
        assert len(results) == 1, (nb.stem, results)
        keys = re.findall(r'"(\w+)":', "".join(c for c in pg.eval_on_selector_all(
            "div.cell", "els => els.map(e => (e.querySelector('.cell_input') || {innerText: ''}).innerText)")
            if "record_results(" in c))
        assert len(keys) >= 4 and all(k in results[0]["text"] for k in keys), (nb.stem, keys, results[0]["text"][:500])
        assert re.search(r"\d\.\d", results[0]["text"]), results[0]["text"][:500]   # with its numbers
        pg.screenshot(path=str(ARTIFACTS / f"site_{nb.stem}.png"), full_page=False)

    pg.goto(pg.base + "search.html?q=fit_one_cycle", wait_until="load", timeout=LOAD_S * 1000)
    pg.wait_for_selector("#search-results ul.search li", timeout=LOAD_S * 1000)
    hits = pg.eval_on_selector_all("#search-results ul.search li a", "els => els.map(e => e.getAttribute('href'))")
    assert any("lessons/" in h for h in hits) and any("api/" in h for h in hits), hits
    pg.screenshot(path=str(ARTIFACTS / "site_search.png"), full_page=False)

    pg.goto(pg.base + f"api/{_module_pages()['metrics']}.html", wait_until="load", timeout=LOAD_S * 1000)   # a formula
    pg.wait_for_function("() => document.querySelectorAll('.MathJax, .MathJax_Display, mjx-container').length > 0",
                         timeout=LOAD_S * 1000)
    assert not pg.outside, f"{len(pg.outside)} requests to outside hosts: {pg.outside[:10]}"
    assert not pg.failed, pg.failed[:10]
    assert not pg.errors, pg.errors[:10]
    print(f"browser part: {time.monotonic() - t0:.1f}s")
