"""Two fixes to the book's HTML pages, applied as each page is written.

- Every script once. Sphinx 7.4 lists an inline script twice when an extension adds it after the
  builder has started (once with no file name, once with an empty one); sphinx-togglebutton and
  sphinx-thebe both do, and the second `const THEBE_JS_URL` is a JavaScript error on every page.
- No Thebe. The book launches notebooks on Colab and Binder, not live in the page, so the Thebe
  scripts (which would fetch Thebe from a CDN when started) are left out.
"""

from sphinx.application import Sphinx


def is_thebe(script) -> bool:
    name = str(script.filename or "")
    return name.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in script.attributes.get("body", "")


def tidy_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    seen, kept = set(), []
    for script in context.get("script_files", []):
        key = (
            str(script.filename or ""),
            script.priority,
            tuple(sorted(script.attributes.items())),
        )
        if key in seen or is_thebe(script):
            continue
        seen.add(key)
        kept.append(script)
    context["script_files"] = kept


def setup(app: Sphinx) -> dict:
    app.connect("html-page-context", tidy_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
