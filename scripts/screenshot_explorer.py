"""The README's explorer screenshot: the attention explorer of a running `mt.serve`, one sentence
translated, one source word's links highlighted, captured with headless Chromium.

    python -m mt.serve &                      # the default model on http://127.0.0.1:8000/
    python scripts/screenshot_explorer.py --url http://127.0.0.1:8000/ --out docs/img/explorer.png

Needs Debian's chromium and chromium-driver, and selenium (`pip install selenium`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

SENTENCE = "A little girl is eating ice cream in the park ."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000/")
    p.add_argument("--out", default="docs/img/explorer.png")
    p.add_argument("--text", default=SENTENCE)
    p.add_argument("--highlight", type=int, default=2, help="source word whose links are highlighted")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = p.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=args.chromedriver))
    try:
        driver.set_window_size(1000, 1400)
        driver.get(args.url)
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "beam").get_attribute("value"))  # /health answered
        driver.find_element(By.ID, "source-input").send_keys(args.text, Keys.ENTER)
        wait.until(lambda d: d.find_element(By.ID, "translation").text.strip())
        word = driver.find_element(By.CSS_SELECTOR, f'#links .word[data-side="src"][data-index="{args.highlight}"]')
        ActionChains(driver).move_to_element(word).perform()
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1000, height + 140)  # the window size includes the (headless) browser frame
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(args.out)
        print(f"screenshot written to {args.out}")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
