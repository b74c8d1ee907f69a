"""The attention explorer in a real browser: the real server on 127.0.0.1 (uvicorn in a thread),
headless Chromium from Debian driven by Selenium through Debian's chromedriver (nothing is
downloaded). Skipped, with the reason, where Chromium, its driver or selenium is missing."""

from __future__ import annotations

import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from mt.config import DecodeConfig, ServeConfig

pytestmark = pytest.mark.slow  # needs the trained toy model (requested inside the fixture)

SENTENCE = "Today the dog runs in the park ."
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get install chromium chromium-driver; pip install selenium"


def skip_without_browser() -> str:
    """The Chromium binary; skips the test (one line) if anything the browser needs is missing."""
    chromium = shutil.which("chromium")
    missing = [name for name, ok in (("chromium", chromium), ("chromium-driver", CHROMEDRIVER.is_file())) if not ok]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing or chromium is None:
        pytest.skip(f"browser test needs {', '.join(missing)} ({INSTALL})")
    return chromium


@contextmanager
def browse(checkpoint: Path):
    """(driver, url): the explorer served from `checkpoint` on 127.0.0.1, and a headless Chromium."""
    chromium = skip_without_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from mt.serve.app import create_app
    from mt.serve.server import bind, server_for, url_of
    from mt.translate import Translator

    translator = Translator(checkpoint, torch.device("cpu"), DecodeConfig(), attention=True)
    sock = bind("127.0.0.1", 0)
    server = server_for(create_app(translator, ServeConfig(), checkpoint=checkpoint), log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    try:
        yield driver, url_of(sock)
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def explorer(request):
    """(driver, url): the explorer served from the toy checkpoint, and a headless Chromium."""
    skip_without_browser()  # before the model is trained: a skip costs nothing
    with browse(request.getfixturevalue("trained_run") / "checkpoints" / "best.pt") as opened:
        yield opened


def cell_fills(driver) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#heatmap rect.cell')].map(c => c.getAttribute('fill'))"
    )


def test_explorer_translates_draws_and_fits_a_phone(explorer, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver, url = explorer
    driver.set_window_size(1280, 900)
    driver.get(url)
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: d.find_element(By.ID, "beam").get_attribute("value"))  # /health answered

    # Type a sentence, press Enter, wait for the translation.
    box = driver.find_element(By.ID, "source-input")
    box.send_keys(SENTENCE, Keys.ENTER)
    wait.until(lambda d: d.find_element(By.ID, "translation").text.strip())
    assert driver.find_element(By.ID, "translation").text.startswith("Heute")
    assert driver.find_elements(By.CSS_SELECTOR, "#nbest li")

    # The heatmap: one cell per (target word, source word), in more than a few colours.
    css = driver.find_elements
    n_src = len(css(By.CSS_SELECTOR, '#links .word[data-side="src"]'))
    n_tgt = len(css(By.CSS_SELECTOR, '#links .word[data-side="tgt"]'))
    assert n_src == len(SENTENCE.split()) and n_tgt > 0
    mean = cell_fills(driver)
    assert len(mean) == n_src * n_tgt and len(set(mean)) > 3

    # The alignment: a line of some length per link, every target word reached, links outlined in the heatmap.
    lines = css(By.CSS_SELECTOR, "#links line.link")
    ends = [[float(line.get_attribute(a)) for a in ("x1", "y1", "x2", "y2")] for line in lines]
    assert len(lines) >= n_tgt and all(abs(x2 - x1) + abs(y2 - y1) > 10 for x1, y1, x2, y2 in ends)
    assert {line.get_attribute("data-tgt") for line in lines} == {str(j) for j in range(n_tgt)}
    assert len(css(By.CSS_SELECTOR, "#heatmap rect.link-mark")) == len(lines)

    # Another head: the heatmap changes.
    view = Select(driver.find_element(By.ID, "view"))
    assert len(view.options) > 3  # the all-layer mean, each layer's mean, each head
    view.select_by_value("0:1")
    wait.until(lambda d: cell_fills(d) != mean)
    view.select_by_value("1")
    assert cell_fills(driver) not in (mean, [])

    # Hover a target word: it, its links, the source words they reach and its heatmap row light up.
    word = driver.find_element(By.CSS_SELECTOR, '#links .word[data-side="tgt"][data-index="0"]')
    ActionChains(driver).move_to_element(word).perform()
    wait.until(lambda d: "active" in word.get_attribute("class"))
    active = css(By.CSS_SELECTOR, "#links line.link.active")
    assert active and all(line.get_attribute("data-tgt") == "0" for line in active)
    for line in active:
        partner = driver.find_element(
            By.CSS_SELECTOR, f'#links .word[data-side="src"][data-index="{line.get_attribute("data-src")}"]'
        )
        assert "active" in partner.get_attribute("class")
    assert len(css(By.CSS_SELECTOR, '#heatmap rect.cell.active[data-row="0"]')) == n_src
    assert len(css(By.CSS_SELECTOR, "#heatmap rect.cell.active")) == n_src
    driver.save_screenshot(str(tmp_path / "explorer-desktop.png"))

    # A phone-sized window: nothing sticks out to the right, so the page never scrolls sideways (a
    # heatmap too wide for readable cells scrolls inside its own box).
    driver.set_window_size(390, 844)
    wait.until(lambda d: d.execute_script("return window.innerWidth") <= 420)
    time.sleep(0.3)  # the alignment is redrawn 100 ms after the last resize event
    width, inner = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    outside = driver.execute_script(
        "return [...document.querySelectorAll('body *')]"
        ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)"
        ".filter(e => !e.parentElement.closest('.heatmap'))"
        ".map(e => e.tagName + (e.id ? '#' + e.id : ''))"
    )
    assert width <= inner and outside == [], outside
    driver.save_screenshot(str(tmp_path / "explorer-phone.png"))
    print(f"screenshots: {tmp_path}")

    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors  # no script errors, no blocked or missing resources


def test_explorer_shows_the_recorded_heads_first(tmp_path):
    """A checkpoint that records its aligning heads: the heatmap opens on the matrix its links come
    from, named like the other views (layers and heads from 1)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    skip_without_browser()
    from tests.test_align import SUPERVISED, toy_model_file

    with browse(toy_model_file(tmp_path / "sup.pt", SUPERVISED)) as (driver, url):
        driver.get(url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "beam").get_attribute("value"))
        driver.find_element(By.ID, "source-input").send_keys("the cat sits.", Keys.ENTER)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#heatmap rect.cell"))
        view = Select(driver.find_element(By.ID, "view"))
        assert view.first_selected_option.get_attribute("value") == "aligned"
        assert view.first_selected_option.text == "Links · Layer 2 · head 1 (supervised)"
        aligned = cell_fills(driver)
        view.select_by_value("1:0")  # the same heads, from the same full-context pass
        assert cell_fills(driver) == aligned
        words = driver.find_elements(By.CSS_SELECTOR, '#links .word[data-side="src"]')
        assert [w.text for w in words] == ["the", "cat", "sits", "."]
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
