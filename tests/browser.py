"""Headless Chromium for tests of what a person looks at: Debian's `chromium` + `chromium-driver`, driven by
selenium. Installed here when missing (apt-get as root, as CI runs; selenium with pip into this venv), so a fresh
machine needs nothing by hand. Nothing is downloaded by selenium itself: both binaries are given by path."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")


def ensure_browser() -> None:
    """apt-get chromium + chromium-driver and pip selenium, each only when it is missing."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        sudo = [] if shutil.which("sudo") is None or _is_root() else ["sudo"]
        subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], check=True)
    if importlib.util.find_spec("selenium") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "selenium>=4.20"], check=True)


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


@contextmanager
def chromium(profile: Path) -> Iterator:
    """A selenium Chrome driver on Debian's headless chromium with a new empty profile folder."""
    ensure_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    profile.mkdir(parents=True, exist_ok=True)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(check: Callable[[], object], what: str, timeout_s: float = 90.0, driver=None):
    """Poll `check` until it returns something truthy; fail naming `what` (with the page's text when given)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = check()
        except Exception:  # noqa: BLE001 — the page is still rendering: elements come and go
            found = None
        if found:
            return found
        time.sleep(0.5)
    text = driver.find_element("tag name", "body").text[:2000] if driver is not None else ""
    raise TimeoutError(f"{what} not seen after {timeout_s:.0f} s; page text:\n{text}")
