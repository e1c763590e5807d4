"""The status page's Configuration card in a real headless Chromium: the generation, and a
failed reload said as failed, with its reason, while the previous configuration runs on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.integration.fixtures import pbx_settings
from tests.integration.reloading import config_doc, pbx_doc, reloading_gateway, write_config
from tests.operator.test_status_page import ARTIFACTS, browser  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration


def _config_card(driver: Any) -> str:
    return str(driver.execute_script("return document.getElementById('config').innerText || '';"))


async def test_status_page_says_the_last_reload_failed(
    browser: Any,  # noqa: F811
    sim_factory: Any,
    unique: str,
    tmp_path: Any,
) -> None:
    sim = await sim_factory()
    tenant = f"p{unique}"
    config = tmp_path / "gateway.yaml"
    good = config_doc([pbx_doc(pbx_settings(sim, tenant))], tmp_path / "state", http=True)
    write_config(config, good)
    async with reloading_gateway(config) as app:
        assert app.web is not None and app.reloader is not None
        await asyncio.to_thread(browser.get, f"http://127.0.0.1:{app.web.port}/")
        await wait_for(lambda: "generation" in _config_card(browser), timeout=15)
        assert "none since start" in _config_card(browser)
        write_config(config, {**good, "pbxs": [*good["pbxs"], {"tenant": "x", "vendor": "?"}]})
        await wait_for(lambda: app.reloader.record.last_ok is False, timeout=10)
        await wait_for(lambda: "FAILED" in _config_card(browser), timeout=10)
        card = _config_card(browser)
        assert "pbxs.1.vendor" in card and "previous configuration keeps running" in card
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(browser.save_screenshot, str(ARTIFACTS / "status-reload.png"))
