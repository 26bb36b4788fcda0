"""Sphinx configuration of the course website. Don't call sphinx-build on it by hand: tools/build_site.py (what
`make site` runs) stages the pages it reads (the README as the home page, the executed lessons, the module notebooks
with their API) and then runs Sphinx with this configuration. Everything the pages load is served from the site
itself: no outside host (tests/test_site.py blocks and counts such requests)."""
import configparser, hashlib, os, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # autodoc documents this checkout's lessonkit, not another installed copy
os.environ.setdefault("MPLBACKEND", "Agg")

_ini = configparser.ConfigParser()
_ini.read(ROOT / "settings.ini", encoding="utf8")
_cfg = _ini["DEFAULT"]

project = _cfg["title"]
author = _cfg["author"]
copyright = _cfg["copyright"]
release = version = _cfg["version"]

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.viewcode"]
exclude_patterns = ["**.ipynb_checkpoints"]
default_role = "code"             # `name` in a docstring reads as code, as it does in the notebooks
smartquotes = False               # docstrings quote values ('auto'): keep them as typed
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
myst_update_mathjax = False      # its MathJax 3 settings (window.MathJax = {...}) would stop MathJax 2, used below
nb_execution_mode = "off"         # the lessons come executed (runs/); the module notebooks show their code
nb_output_stderr = "remove"       # warnings and progress bars' leftovers
nb_ipywidgets_js = {}             # never load the widget manager from a CDN (widgets show their static figure)
nb_merge_streams = True
suppress_warnings = ["mystnb.unknown_mime_type", "misc.highlighting_failure", "myst.header"]   # myst.header: each cell is checked alone

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": True}
autodoc_typehints = "signature"

# MathJax 2 from the PyPI package jupyter-server-mathjax (tools/build_site.py copies it to build/site/static/mathjax,
# served as _static/mathjax): formulas render with nothing loaded from a CDN.
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {"HTML-CSS": {"availableFonts": [], "webFont": "STIX-Web", "imageFont": None, "preferredFont": None},
                   "menuSettings": {"zoom": "None"}, "showMathMenu": False}

html_theme = "sphinx_book_theme"
html_title = "lessonkit: a course in transfer learning"
html_static_path = ["_static", str(ROOT / "build" / "site" / "static")]   # the second: MathJax, see above
html_css_files = ["lessonkit.css"]
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {
    "repository_url": _cfg["git_url"],
    "repository_branch": _cfg["branch"],
    "use_repository_button": True,
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "show_toc_level": 2,
    "use_download_button": False,
    "use_fullscreen_button": False,
}


def _code_spans(line: str) -> str:
    "Markdown's `code` (how nbdev docstrings write it) as reStructuredText's ``code``, even before a letter (`x`s)."
    return re.sub(r"(?<!`)`([^`]+)`(?!`)(\w?)", lambda m: f"``{m[1]}``" + (f"\\ {m[2]}" if m[2] else ""), line)


def _param_docs(app, what, name, obj, options, lines):
    "nbdev's parameter comments (`x: int = 1, # what x is`) as a parameter list under the docstring."
    lines[:] = [_code_spans(l) for l in lines]
    if what not in ("function", "method", "class"): return
    try:
        from fastcore.docments import docments
        docs = docments(obj.__init__ if what == "class" else obj)
    except Exception: return   # builtins, C functions, objects with no source
    params = [k for k in docs if k not in ("self", "return")]
    if docs.get("return") and params and not docs[params[-1]]:
        # `last: int = 0) -> T: # comment` -- here that comment always describes the last parameter, not the result
        docs[params[-1]], docs["return"] = docs["return"], None
    items = [(k, v) for k, v in docs.items() if v and k != "self"]
    if not items: return
    lines.append("")
    for k, v in items: lines.append(_code_spans(f":returns: {v}" if k == "return" else f":param {k}: {v}"))


def _drop_sourceless_modules(app):
    "viewcode's module index links every module it met, even one it has no source page for (builtins): a dead link."
    mods = getattr(app.env, "_viewcode_modules", {})
    for name in [k for k, v in mods.items() if v is False]: del mods[name]
    return []


# Sphinx rereads a page when its source or a config value changes; autodoc's output also depends on the package and
# on this file's code: a digest of both, as a config value, makes a change to either reread every page.
lessonkit_code_digest = hashlib.sha256(b"".join(
    p.read_bytes() for p in [Path(__file__), *sorted((ROOT / "lessonkit").rglob("*.py"))])).hexdigest()


def setup(app):
    app.add_config_value("lessonkit_code_digest", "", "env")
    app.connect("autodoc-process-docstring", _param_docs)
    app.connect("html-collect-pages", _drop_sourceless_modules, priority=400)   # before viewcode's pages (500)
