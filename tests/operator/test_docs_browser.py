"""The documentation site as a reader sees it: built with ``mkdocs build --strict``, served over
HTTP and opened in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``, through
Selenium). The main pages load with their navigation, the search finds an event type, and a
screenshot of each page is saved with the test's artifacts (``var/test-artifacts/docs-*.png``).

Nothing is skipped: without Chromium, its driver, Selenium or MkDocs the test fails and says how
to install them (``scripts/ensure-browser``, ``scripts/install``).
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.operator.test_status_page import ARTIFACTS, browser  # noqa: F401 (the fixture)

#: page (under the site root) -> a text its main content must show
PAGES = {
    "": "An asyncio service",
    "getting-started/": "scripts/demo",
    "operating/configuration/": "pbxs[].tenant",
    "vendors/yeastar/": "refresh_token",
    "vendors/meiqia/": "Meiqia-Signature",
    "operating/troubleshooting/": "auth_failed",
    "consuming/catalogue/": "call.ringing",
    "commands/reference/": "call.dial",
    "plugins/api/": "VendorPlugin",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site built into a temporary folder and served on a free loopback port."""
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    if build.returncode != 0 and "No module named mkdocs" in build.stderr:
        pytest.fail("the docs test needs MkDocs: run scripts/install (the docs extra)")
    assert build.returncode == 0, build.stderr[-3000:]
    handler = functools.partial(QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="docs-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _wait(driver: Any, script: str, what: str, timeout: float = 15) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(script))
    except Exception as exc:
        raise AssertionError(f"{what}: not seen within {timeout} s") from exc


def test_main_pages_render_with_navigation(browser: Any, site: str) -> None:  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for path, text in PAGES.items():
        browser.get(site + path)
        _wait(browser, "return document.readyState === 'complete'", f"{path or '/'} loaded")
        content = browser.execute_script(
            "const m = document.querySelector('article.md-content__inner');"
            " return m ? m.innerText : '';"
        )
        assert text in content, f"{path or '/'} lacks {text!r}"
        assert "404" not in browser.title, path
        nav = browser.execute_script("return document.querySelectorAll('.md-nav__link').length")
        assert nav > 20, f"{path or '/'}: the navigation has {nav} links"
        name = path.strip("/").replace("/", "-") or "home"
        browser.save_screenshot(str(ARTIFACTS / f"docs-{name}.png"))


def test_search_finds_an_event_type(browser: Any, site: str) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    browser.get(site)
    _wait(browser, "return document.readyState === 'complete'", "home loaded")
    browser.find_element(By.CSS_SELECTOR, "label.md-search__icon, .md-search__input").click()
    field = browser.find_element(By.CSS_SELECTOR, "input.md-search__input")
    field.send_keys("account.low_balance")
    _wait(
        browser,
        "return [...document.querySelectorAll('.md-search-result__item')]"
        ".some(e => e.innerText.includes('low_balance'))",
        "a search result for account.low_balance",
    )
    browser.save_screenshot(str(ARTIFACTS / "docs-search.png"))
