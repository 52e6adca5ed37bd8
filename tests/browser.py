"""Headless Chromium for the web app's tests: a driver, sign-in, waits that say what they waited for, and
full-page screenshots at desktop and phone width."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DESKTOP = (1280, 900)
PHONE = (390, 844)
MAX_SHOT_HEIGHT = 5000


def chromium(profile: Path) -> webdriver.Chrome:
    """A headless Chromium with its own profile folder, at desktop size, never reaching the network."""
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-dev-shm-usage",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}", f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def wait_for(driver: webdriver.Chrome, condition: Callable[[webdriver.Chrome], Any], what: str, timeout_s=60):
    """The first truthy value of `condition(driver)`; AssertionError naming `what` after the timeout."""
    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.1).until(condition)
    except TimeoutException:
        raise AssertionError(f"not seen within {timeout_s} s: {what}") from None


def text_of(driver: webdriver.Chrome, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def visible(driver: webdriver.Chrome, element_id: str) -> bool:
    found = driver.find_elements(By.ID, element_id)
    return bool(found) and found[0].is_displayed()


def sign_in(driver: webdriver.Chrome, password: str, username: str = "admin") -> None:
    """Fill and send the sign-in form on the current page."""
    wait_for(driver, lambda d: visible(d, "username"), "the sign-in form")
    for field, value in (("username", username), ("password", password)):
        driver.find_element(By.ID, field).clear()
        driver.find_element(By.ID, field).send_keys(value)
    driver.find_element(By.ID, "login-button").click()


def open_screen(driver: webdriver.Chrome, name: str) -> None:
    """Go to a screen with its navigation link, as a person would."""
    driver.find_element(By.CSS_SELECTOR, f'#nav a[data-screen="{name}"]').click()
    wait_for(driver, lambda d: visible(d, f"screen-{name}"), f"the {name} screen")


def screenshots(driver: webdriver.Chrome, folder: Path, name: str) -> list[Path]:
    """`name`.png (desktop, whole page) and `name`-phone.png (390 px wide) in `folder`."""
    shots = []
    for suffix, (width, height) in (("", DESKTOP), ("-phone", PHONE)):
        driver.set_window_size(width, height)
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.3)  # charts and tables settle on the new width
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": width, "height": min(size["height"], MAX_SHOT_HEIGHT), "scale": 1}
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path = folder / f"{name}{suffix}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        shots.append(path)
    driver.set_window_size(*DESKTOP)
    return shots
