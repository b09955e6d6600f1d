"""What the tests of `refine report`'s page in headless Chromium share: where screenshots go, and
driving the page (the `browser` fixture itself is in conftest)."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import ROOT

ARTIFACTS = ROOT / "tests" / "artifacts"


def _open(driver, page: Path) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get_log("performance")
    driver.get(page.as_uri())


def _assert_self_contained(driver, page: Path) -> None:
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not errors, errors
    requested = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requested.append(message["params"]["request"]["url"])
    assert set(requested) <= {page.as_uri()}, requested
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
    linked = driver.execute_script(
        "return Array.from(document.querySelectorAll('[src],[href]'))"
        ".map(e => e.getAttribute('src') || e.getAttribute('href'))")
    assert not [u for u in linked if u.lower().startswith(("http:", "https:", "//"))], linked


def _set_whatif(driver, card_id: str, index: int) -> tuple[float, int, int]:
    card = f"document.getElementById('{card_id}')"
    driver.execute_script(
        f"const r = {card}.querySelector('input[type=range]'); r.value = arguments[0];"
        "r.dispatchEvent(new Event('input'));", index)
    threshold = float(driver.execute_script(f"return {card}.getAttribute('data-threshold')"))
    docs = driver.execute_script(f"return {card}.querySelector('.kept-docs').textContent")
    words = driver.execute_script(f"return {card}.querySelector('.kept-words').textContent")
    return threshold, int(docs.replace(",", "")), int(words.replace(",", ""))
