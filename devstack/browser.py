"""Headless Chromium for the GUI's checks, with the system's browser and driver only: Debian's ``chromium`` and
``chromium-driver`` here, Google Chrome and its chromedriver on a CI runner. Nothing is downloaded: Selenium
Manager is kept offline and is never asked, as both paths are given."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Final

BROWSERS: Final = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
PHONE: Final = (390, 844)


def binaries() -> tuple[str, str] | None:
    """The browser and its driver, or None when either is missing."""
    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if driver is None and os.environ.get("CHROMEWEBDRIVER"):  # GitHub's runner images keep it there
        candidate = Path(os.environ["CHROMEWEBDRIVER"]) / "chromedriver"
        driver = str(candidate) if candidate.exists() else None
    return (browser, driver) if browser and driver else None


def chromium(size: tuple[int, int] = PHONE) -> Any:
    """A headless browser (a phone-width window by default) that keeps the page's console log."""
    from selenium import webdriver  # noqa: PLC0415 (a dev dependency)

    found = binaries()
    if found is None:
        raise RuntimeError(f"no browser ({', '.join(BROWSERS)}) or no chromedriver: `make deps` installs Debian's")
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={size[0]},{size[1]}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=found[1]))
    driver.set_page_load_timeout(30)
    return driver


def console(driver: Any) -> list[str]:
    return [str(entry["message"]) for entry in driver.get_log("browser")]
