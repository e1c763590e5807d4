"""The status page in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``, driven by
Selenium): it loads, shows the simulated PBX connected, disconnected once the simulator stops,
connected again after it restarts; a screenshot is saved with the test's artifacts.

Nothing is skipped: without Chromium, its driver or Selenium the test fails and says how to
install them (``scripts/ensure-browser``, ``scripts/install``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import HttpSettings
from tests.conftest import REPO_ROOT
from tests.integration.fixtures import pbx_settings, running_gateway

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Where the test's artifacts go (the screenshots).
ARTIFACTS = Path(os.environ.get("GATEWAY_TEST_ARTIFACTS", REPO_ROOT / "var/test-artifacts"))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(
            f"the status page test needs {', '.join(missing)}: run scripts/ensure-browser"
            " (installs the Debian packages chromium and chromium-driver)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the status page test needs Selenium: run scripts/install (pip selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,900")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _card_state(driver: Any, tenant: str) -> str | None:
    """The PBX card's state, read in one script (the page re-renders every 2 s)."""
    return driver.execute_script(
        "const c = document.querySelector(`.pbx[data-tenant='${arguments[0]}']`);"
        " return c ? c.dataset.state : null;",
        tenant,
    )


def _text(driver: Any, element_id: str) -> str:
    return str(
        driver.execute_script(
            "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';",
            element_id,
        )
    )


async def _until(driver: Any, check: Callable[[Any], bool], what: str, timeout: float = 20) -> None:
    """Wait (without blocking the gateway's loop) until ``check(driver)`` is true."""
    try:
        async with asyncio.timeout(timeout):
            while not await asyncio.to_thread(check, driver):  # noqa: ASYNC110 (a browser)
                await asyncio.sleep(0.2)
    except TimeoutError:
        text = await asyncio.to_thread(_text_of_body, driver)
        pytest.fail(f"status page: {what} not shown within {timeout} s; the page says:\n{text}")


async def test_status_page_follows_the_pbx_link(
    browser: Any, sim_factory: Callable[..., Any], unique: str
) -> None:
    tenant = f"page-{unique}"
    sim = await sim_factory(calls_per_second=2.0)
    port = sim.port
    http = HttpSettings(enabled=True, host="127.0.0.1", port=0)
    async with running_gateway(pbx_settings(sim, tenant), http=http) as app:
        assert app.web is not None and app.web.port
        url = f"http://127.0.0.1:{app.web.port}/"
        await asyncio.to_thread(browser.get, url)
        await _until(
            browser,
            lambda d: d.execute_script("return document.body.dataset.loaded") == "yes",
            "the first status",
        )
        assert "PBX gateway" in await asyncio.to_thread(lambda: browser.title)
        await _until(browser, lambda d: _card_state(d, tenant) == "connected", "the PBX connected")
        await _until(
            browser,
            lambda d: (
                "READY" in d.find_element("id", "overall").text
                and "NOT" not in d.find_element("id", "overall").text
            ),
            "READY",
        )
        await asyncio.to_thread(ARTIFACTS.mkdir, parents=True, exist_ok=True)
        await asyncio.sleep(2.5)  # a few events, so the rates and ages show
        await asyncio.to_thread(
            browser.save_screenshot, str(ARTIFACTS / "status-page-connected.png")
        )

        await sim.stop()
        await _until(
            browser, lambda d: _card_state(d, tenant) == "disconnected", "the PBX disconnected"
        )
        await _until(browser, lambda d: "NOT READY" in _text(d, "overall"), "NOT READY")
        reasons = await asyncio.to_thread(_text, browser, "reasons")
        assert tenant in reasons and "disconnected" in reasons
        await asyncio.to_thread(
            browser.save_screenshot, str(ARTIFACTS / "status-page-disconnected.png")
        )

        await sim_factory(port=port, calls_per_second=2.0)
        await _until(
            browser,
            lambda d: _card_state(d, tenant) == "connected",
            "the PBX connected again",
            timeout=30,
        )

        # usable on a narrow screen: nothing wider than the window
        await asyncio.to_thread(browser.set_window_size, 390, 844)
        wide = await asyncio.to_thread(
            browser.execute_script,
            "return document.documentElement.scrollWidth <= window.innerWidth + 1",
        )
        assert wide, "the page scrolls sideways on a 390 px wide screen"
        await asyncio.to_thread(browser.save_screenshot, str(ARTIFACTS / "status-page-narrow.png"))


def _text_of_body(driver: Any) -> str:
    return str(driver.execute_script("return document.body.innerText"))
