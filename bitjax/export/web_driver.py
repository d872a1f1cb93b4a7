"""Drive a `--format web` folder in headless Chromium: what the tests and benchmarks/web.py do with the page.

The browser is the system's Chromium (Debian's `chromium` package, /usr/bin/chromium, or $BITJAX_CHROMIUM),
driven by Playwright for Python (`pip install -e '.[web]'`); nothing is downloaded at run time (Playwright's
own browser builds are never installed). The page is served on 127.0.0.1 either by `bitjax serve`'s server
(cross-origin isolated: threads) or by the standard library's plain static server (what `python -m
http.server` runs: one thread), and used through its own API, `window.bitjaxWeb`.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import os
import shutil
import threading
from pathlib import Path
from typing import Iterator

from bitjax.export.web_serve import make_server


def chromium_path() -> str:
    return os.environ.get("BITJAX_CHROMIUM", "/usr/bin/chromium")


def browser_problem() -> str | None:
    """Why the page cannot be driven here (None when it can): names what to install."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed: pip install -e '.[web]'"
    if not (Path(chromium_path()).is_file() or shutil.which(chromium_path())):
        return f"no Chromium at {chromium_path()}: apt-get install chromium (or set $BITJAX_CHROMIUM)"
    return None


class _PlainHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):   # noqa: A002
        pass


@contextlib.contextmanager
def served(directory: str | Path, isolated: bool = True) -> Iterator[str]:
    """Serve `directory` on a free port of 127.0.0.1 in a thread; yields the base URL."""
    if isolated:
        server = make_server(directory, port=0)
    else:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                 functools.partial(_PlainHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def browser():
    """A headless Chromium (Playwright's sync API)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield instance
        finally:
            instance.close()


def open_page(instance, url: str, timeout_s: float = 120, viewport=(1000, 720)):
    """A new tab with the page loaded and its model ready; RuntimeError with the page's own error otherwise."""
    page = instance.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.goto(url)
    page.wait_for_function("window.bitjaxWeb && (window.bitjaxWeb.info || window.bitjaxWeb.error)",
                           timeout=timeout_s * 1000)
    error = page.evaluate("window.bitjaxWeb.error")
    if error:
        raise RuntimeError(f"the page at {url} failed to load: {error}")
    return page


def generate(page, timeout_s: float = 300, **options) -> dict:
    """One continuation through window.bitjaxWeb.generate(options) (prompt, maxTokens, temperature, chat, ids,
    extra); returns its result (text, ids, timings, decodePerSecond, threads...)."""
    page.set_default_timeout(timeout_s * 1000)
    return page.evaluate("(options) => window.bitjaxWeb.generate(options)", options)


def page_info(page) -> dict:
    return page.evaluate("window.bitjaxWeb.info")
