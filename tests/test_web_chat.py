"""The web chat page in headless Chromium: a real login and a real streamed answer, kept as a screenshot."""

import os
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from agents.catalog import AGENTS
from conveyor.settings import DEVELOPMENT_ADMIN_PASSWORD

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
QUESTION = "Summarize in one sentence: the Conveyor chat API streams answers from a small local model."


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a download
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-dev-shm-usage", "--window-size=1100,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


def sign_in(browser, api, password: str) -> None:
    browser.get(api.url)
    browser.find_element(By.ID, "username").send_keys("admin")
    browser.find_element(By.ID, "password").send_keys(password)
    browser.find_element(By.ID, "login-button").click()


def test_wrong_password_shows_an_error(browser, api):
    sign_in(browser, api, "not-the-password")
    error = WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "login-error").text)
    assert "Wrong username or password" in error
    assert not browser.find_element(By.ID, "chat").is_displayed()


def test_login_and_a_streamed_answer_with_its_agent(browser, api, output_dir):
    sign_in(browser, api, DEVELOPMENT_ADMIN_PASSWORD)
    WebDriverWait(browser, 60).until(expected_conditions.visibility_of_element_located((By.ID, "message")))
    assert browser.find_element(By.ID, "whoami").text == "admin"
    assert not browser.find_element(By.ID, "login").is_displayed()

    browser.find_element(By.ID, "message").send_keys(QUESTION)
    browser.find_element(By.ID, "send-button").click()

    # Tokens show up in the answer before the final event names the agent: the page streams.
    seen_partial = False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        answers = browser.find_elements(By.CSS_SELECTOR, ".message.assistant")
        agent = answers[-1].find_element(By.CSS_SELECTOR, ".agent").text if answers else ""
        text = answers[-1].find_element(By.CSS_SELECTOR, ".text").text if answers else ""
        if agent:
            break
        seen_partial = seen_partial or bool(text.strip())
        time.sleep(0.05)
    browser.save_screenshot(str(output_dir / "web_chat.png"))

    assert agent in AGENTS, browser.find_element(By.ID, "status").text
    assert seen_partial, "no token was shown before the final event"
    answer = browser.find_elements(By.CSS_SELECTOR, ".message.assistant")[-1]
    assert answer.find_element(By.CSS_SELECTOR, ".text").text.strip()
    assert "failed" not in answer.get_attribute("class")
    assert browser.find_elements(By.CSS_SELECTOR, ".message.user")[-1].text == QUESTION
    assert (output_dir / "web_chat.png").stat().st_size > 10_000
