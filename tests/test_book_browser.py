"""The built book, opened page by page in a real headless browser.

For every page of `_toc.yml`, from the build in `_build/html` (`make test` builds it first), this
checks what a reader sees:

- the math is typeset: every Sphinx math element holds MathJax output (`mjx-container`), MathJax
  reports no TeX error, and no raw `\\(`, `\\[` or `$$` is left in the text;
- every image has loaded (`naturalWidth > 0`), lazy ones included;
- every widget view the notebook saved is on the page and drawn from the saved state, with its
  description labels;
- every font a style sheet declares loads, whether or not the page happens to draw a glyph of it
  before the test ends (the widget manager's icon fonts included);
- the console shows no JavaScript error and no resource fails to load;
- no request goes anywhere but the local server: the book is self-contained;
- no code block or output needs horizontal scrolling: every line fits the content column;
- every chapter has Colab and Binder buttons for the repository that `_config.yml` names.

Debian's Chromium (`apt-get install -y chromium`) is driven through the DevTools protocol by
Playwright, which uses the browser already installed and downloads nothing. A screenshot of each
page is saved under `_build/screenshots/`.
"""

import contextlib
import functools
import http.server
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = Path(os.environ.get("VQVAE_LITE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def toc_pages() -> list[str]:
    """Every document of `_toc.yml`, root first, in reading order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    pages = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                pages.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key, []))

    walk([toc])
    return [page.removesuffix(".md").removesuffix(".ipynb") for page in pages]


PAGES = toc_pages()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the signature is the base class's
        pass


@pytest.fixture(scope="module")
def site():
    """The built book over HTTP on 127.0.0.1, from a thread of this test."""
    if not (HTML / "index.html").is_file():
        pytest.skip("the book is not built: run `make book` (`make test` builds it first)")
    handler = functools.partial(QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium with a fresh profile, driven over the DevTools protocol."""
    assert CHROMIUM.is_file(), f"no Chromium at {CHROMIUM}: apt-get install -y chromium"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
            service_workers="block",
        )
        context.set_default_timeout(30_000)
        yield context
        context.close()


# Force lazy images to load, scroll through the page so that lazy-loading code runs as well, then
# wait (at most 15 s) for every image to finish, and report each one.
LOAD_IMAGES = """async () => {
    const images = [...document.images];
    images.forEach((img) => { img.loading = "eager"; });
    for (let y = 0; y < document.body.scrollHeight; y += window.innerHeight) {
        window.scrollTo(0, y);
        await new Promise((done) => setTimeout(done, 30));
    }
    window.scrollTo(0, 0);
    const settled = (img) => img.complete ? Promise.resolve() : new Promise((done) => {
        img.addEventListener("load", done, { once: true });
        img.addEventListener("error", done, { once: true });
    });
    const timeout = new Promise((done) => setTimeout(done, 15000));
    await Promise.race([Promise.all(images.map(settled)), timeout]);
    return images.map((img) => ({ src: img.getAttribute("src"), width: img.naturalWidth }));
}"""

# Wait for MathJax's first typesetting pass, then count what it made of the page's math.
TYPESET_MATH = """async () => {
    const math = [...document.querySelectorAll("span.math, div.math")];
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
        await MathJax.startup.promise;
    }
    const skip = "pre, code, script, style, textarea, mjx-container, .highlight";
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    const raw = [];
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const text = node.nodeValue;
        if (/\\\\\\(|\\\\\\[|\\$\\$/.test(text) && !node.parentElement.closest(skip)) {
            raw.push(text.trim().slice(0, 80));
        }
    }
    return {
        mathjax: Boolean(window.MathJax && MathJax.version),
        elements: math.length,
        untypeset: math.filter((el) => !el.querySelector("mjx-container")).length,
        containers: document.querySelectorAll("mjx-container").length,
        errors: [...document.querySelectorAll("mjx-merror")].map((el) => el.textContent),
        raw,
    };
}"""

# For each saved widget view: is there a drawn widget just before its <script> tag? Its text, and
# how many errors and typeset formulas it shows.
WIDGET_VIEWS = f"""() => [...document.querySelectorAll('script[type="{WIDGET_VIEW}"]')].map(
    (tag) => {{
        const area = tag.previousElementSibling;
        const drawn = area && area.classList.contains("widget-subarea")
            && area.querySelector(".jupyter-widgets") !== null;
        return {{
            model: JSON.parse(tag.textContent).model_id,
            drawn: Boolean(drawn),
            text: drawn ? area.innerText : "",
            errors: drawn ? area.querySelectorAll(".jupyter-widgets-error-widget").length : 0,
            math: drawn ? area.querySelectorAll("mjx-container").length : 0,
        }};
    }})"""

# Load every font face that the page's style sheets declare, and name those that fail. A browser
# fetches a font only when it first draws a glyph of it, which may come after the test has looked
# (the theme's icons in the widget manager's icon font, until the theme swaps them for SVG): so
# every face is loaded here, and a missing font file is a failure on every run.
LOAD_FONTS = """async () => {
    const faces = [...document.fonts];
    await Promise.all(faces.map((face) => face.load().catch(() => null)));
    return faces.filter((face) => face.status !== "loaded")
        .map((face) => `${face.family} ${face.style} ${face.weight}: ${face.status}`);
}"""


# Code blocks and outputs wider than their box: the first line of each, for the message.
TOO_WIDE = """() => [...document.querySelectorAll("article pre")]
    .filter((pre) => pre.scrollWidth > pre.clientWidth + 1)
    .map((pre) => {
        const lines = pre.textContent.split("\\n");
        return lines.reduce((a, b) => (b.length > a.length ? b : a), "").slice(0, 120);
    })"""


def widget_descriptions(state: dict, model_id: str) -> list[str]:
    """The description labels of a saved widget and of every widget inside it."""
    found, todo, seen = [], [model_id], set()
    while todo:
        model = state.get(todo.pop(), {}).get("state", {})
        if model.get("description"):
            found.append(model["description"])
        for child in model.get("children", []):
            child_id = child.removeprefix("IPY_MODEL_")
            if child_id not in seen:
                seen.add(child_id)
                todo.append(child_id)
    return found


def saved_widget_views(page_name: str) -> int:
    """How many widget views the page's notebook saved in its outputs (0 for a Markdown page)."""
    notebook = ROOT / f"{page_name}.ipynb"
    if not notebook.is_file():
        return 0
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    outputs = [output for cell in cells for output in cell.get("outputs", [])]
    return sum(WIDGET_VIEW in output.get("data", {}) for output in outputs)


def page_widget_state(source: str) -> dict:
    """The saved widget models of a built page, by model id."""
    match = re.search(f'<script type="{re.escape(WIDGET_STATE)}">(.*?)</script>', source, re.S)
    assert match, "the page shows widgets but holds no saved widget state"
    return json.loads(match.group(1))["state"]


@pytest.mark.parametrize("page_name", PAGES)
def test_page_renders_offline(site, browser, page_name):
    html_file = HTML / f"{page_name}.html"
    assert html_file.is_file(), f"{page_name} is in _toc.yml but not in the build: run `make book`"
    source = html_file.read_text(encoding="utf-8")
    view_count = source.count(f'<script type="{WIDGET_VIEW}">')
    assert view_count == saved_widget_views(page_name), (
        f"{page_name}: the notebook saved {saved_widget_views(page_name)} widget views, "
        f"the page has {view_count}: rebuild with `make book`"
    )

    page = browser.new_page()
    errors, foreign = [], []

    def local_only(route):
        url = urlsplit(route.request.url)
        if url.scheme in ("data", "blob") or url.hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    def on_console(message):
        if message.type == "error":
            errors.append(f"console: {message.text}")

    def on_response(response):
        if response.status >= 400:
            errors.append(f"HTTP {response.status}: {response.url}")

    page.route("**/*", local_only)
    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
    page.on("response", on_response)

    page.goto(f"{site}/{page_name}.html", wait_until="load")
    if view_count:
        # The embed manager draws the saved widgets after the page has loaded.
        with contextlib.suppress(PlaywrightTimeoutError):  # reported below, view by view
            page.wait_for_function(
                f"({WIDGET_VIEWS})().every((view) => view.drawn)", timeout=15_000
            )
    images = page.evaluate(LOAD_IMAGES)
    math = page.evaluate(TYPESET_MATH)  # after the widgets: their labels may hold math too
    views = page.evaluate(WIDGET_VIEWS)
    too_wide = page.evaluate(TOO_WIDE)
    fonts_failed = page.evaluate(LOAD_FONTS)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=SCREENSHOTS / f"{page_name.replace('/', '__')}.png", full_page=True)
    page.close()

    assert not foreign, f"{page_name} asks other hosts for: {foreign} (the book must be offline)"
    font_errors = [error for error in errors if re.search(r"\.(woff2?|ttf|eot|otf)\b", error)]
    assert not fonts_failed and not font_errors, (
        f"{page_name}: fonts that did not load: {fonts_failed}\n" + "\n".join(font_errors)
    )
    assert not too_wide, f"{page_name}: code wider than the page, longest lines: {too_wide}"
    broken = [image["src"] for image in images if image["width"] == 0]
    assert not broken, f"{page_name}: images that did not load: {broken}"
    if math["elements"]:
        assert math["mathjax"], f"{page_name} has math but MathJax did not load"
        assert math["untypeset"] == 0, f"{page_name}: {math['untypeset']} math elements untypeset"
        assert math["containers"] >= math["elements"], f"{page_name}: math not typeset: {math}"
    assert not math["errors"], f"{page_name}: MathJax errors {math['errors']}"
    assert not math["raw"], f"{page_name}: raw TeX delimiters left in the text: {math['raw']}"
    if view_count:
        state = page_widget_state(source)
        for view in views:
            assert view["drawn"], f"{page_name}: widget {view['model']} was not drawn"
            assert view["errors"] == 0, f"{page_name}: widget {view['model']} drew an error"
            for label in widget_descriptions(state, view["model"]):
                if re.search(r"\$[^$]+\$", label):  # a label with math, typeset by MathJax
                    assert view["math"], f"{page_name}: widget label {label!r} not typeset"
                else:
                    assert label in view["text"], f"{page_name}: widget label {label!r} not drawn"
    assert not errors, f"{page_name} has errors:\n" + "\n".join(errors)


@pytest.mark.parametrize("page_name", [page for page in PAGES if page.startswith("notebooks/")])
def test_chapter_has_colab_and_binder_buttons(page_name):
    """The launch buttons open this chapter from the repository that _config.yml names."""
    html_file = HTML / f"{page_name}.html"
    if not html_file.is_file():
        pytest.skip("the book is not built: run `make book` (`make test` builds it first)")
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    repository = urlsplit(config["repository"]["url"]).path.strip("/")  # owner/name
    branch = config["repository"]["branch"]
    source = html_file.read_text(encoding="utf-8")
    colab = f"/github/{repository}/blob/{branch}/{page_name}.ipynb"
    interface = config["launch_buttons"].get("notebook_interface", "classic")
    tree = "lab/tree" if interface == "jupyterlab" else "tree"
    binder = f"/v2/gh/{repository}/{branch}?urlpath={tree}/{page_name}.ipynb"
    assert f'href="{config["launch_buttons"]["colab_url"]}{colab}"' in source, "no Colab button"
    assert f'href="{config["launch_buttons"]["binderhub_url"]}{binder}"' in source, (
        "no Binder button"
    )
