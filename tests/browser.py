"""Headless Chromium through Selenium for the listening-page tests and the README screenshot.

Chromium and its driver come from the system's packages (Debian: `apt-get install chromium chromium-driver`; CI's
`.ci/run` installs them). The flags keep a headless run on a closed network quiet: no first-run pages, no
background fetches, a fresh profile every time; autoplay is allowed so that `play()` needs no real user gesture.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAME = "chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required", "--mute-audio"]  # fmt: skip


def chromium_paths() -> tuple[str | None, str | None]:
    """The browser and its driver on PATH, or None for what is missing."""
    browser = next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)
    return browser, shutil.which(DRIVER_NAME)


def missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    browser, driver = chromium_paths()
    if browser is None or driver is None:
        absent = " and ".join(name for name, path in (("chromium", browser), ("chromedriver", driver)) if not path)
        return f"{absent} not installed (apt-get install chromium chromium-driver; .ci/run does)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (the dev extra)"
    return None


def start_chromium(download_dir: Path, width: int = 900, height: int = 900):
    """A headless Chromium driven by Selenium, with a fresh empty profile; downloads go to `download_dir`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    profile = tempfile.mkdtemp(prefix="spa-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in [*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # every request, media included
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(download_dir), "download.prompt_for_download": False}
    )
    session = webdriver.Chrome(service=Service(driver), options=options)
    # Headless Chromium may ignore the download preference: the DevTools command sets it for certain.
    session.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    session.spa_profile = profile
    return session


def stop_chromium(session) -> None:
    session.quit()
    shutil.rmtree(session.spa_profile, ignore_errors=True)


def requested_urls(session) -> list[str]:
    """The URLs the browser requested since the last call (the DevTools network events of the performance log).

    Resource Timing does not list what media elements load; the network events do.
    """
    urls = []
    for entry in session.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def wait_for_json(path: Path, timeout_s: float = 30.0) -> dict:
    """The JSON file a download writes, once Chromium has renamed it from its partial name and it parses."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                pass  # still being written
        time.sleep(0.1)
    raise TimeoutError(f"No download at {path} after {timeout_s} s: {sorted(p.name for p in path.parent.iterdir())}")
