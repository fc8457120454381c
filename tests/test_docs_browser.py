"""The API docs page in a real headless Chromium with the network off: every operation is listed."""

from __future__ import annotations

import json
import urllib.request

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import requested_urls, unreachable


def test_the_docs_render_offline_with_the_appliance_s_own_assets(live_server: str, browser) -> None:
    assert "ERR_NAME_NOT_RESOLVED" in unreachable(browser, "http://example.com/")  # the network is off for it
    requested_urls(browser)  # forget that request
    browser.get_log("browser")  # and what its error page logged
    with urllib.request.urlopen(f"{live_server}/schema/openapi.json") as answer:
        schema = json.load(answer)
    operations = {(method.upper(), path) for path, item in schema["paths"].items() for method in item}
    browser.get(f"{live_server}/schema/docs")
    WebDriverWait(browser, 30).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock-summary")) >= len(operations))
    shown = {
        (block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
         block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute("data-path"))
        for block in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary")
    }
    assert operations <= shown
    assert {"GET /customers/{customer_id}/feed", "POST /events", "GET /analytics"} <= {f"{m} {p}" for m, p in shown}
    urls = requested_urls(browser)
    assert any(u.endswith("/swagger-ui-bundle.js") for u in urls)
    outside = [u for u in urls if not u.startswith((live_server, "data:", "blob:", "about:"))]
    assert outside == []
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
