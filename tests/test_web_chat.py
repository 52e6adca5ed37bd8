"""The chat screen in headless Chromium: a streamed answer with its agent, sources, lineage and feedback
from a real model over a real index, and the same question with the model down (the page says so and
still shows the sources)."""

import time

import pytest
from prefect.settings import PREFECT_API_URL
from selenium.webdriver.common.by import By

from conveyor.settings import DEVELOPMENT_ADMIN_PASSWORD
from flows.index_documents import index_documents
from serving.testing import ProcessServer, free_port
from tests.browser import chromium, open_screen, screenshots, sign_in, text_of, visible, wait_for

DOMAIN = "web-chat-docs"
QUESTION = "According to the knowledge base, how fast does the Zephyr wind turbine turn?"
DOCUMENTS = [
    {
        "id": "zephyr",
        "text": "The Zephyr wind turbine has three carbon blades and turns at 42 revolutions per minute in a "
        "steady breeze; its gearbox is cooled by oil.",
        "metadata": {"title": "Zephyr turbine"},
    },
    {
        "id": "basalt",
        "text": "Basalt is a fine-grained volcanic rock formed from the rapid cooling of lava.",
        "metadata": {"title": "Basalt"},
    },
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


@pytest.fixture(scope="module", autouse=True)
def domain() -> None:
    index_documents(domain=DOMAIN, documents=DOCUMENTS)


def ask(browser, url: str) -> None:
    browser.get(url)
    browser.execute_script("sessionStorage.clear()")
    browser.get(url)
    sign_in(browser, DEVELOPMENT_ADMIN_PASSWORD)
    wait_for(browser, lambda d: visible(d, "nav"), "the signed-in app")
    open_screen(browser, "chat")
    browser.find_element(By.ID, "message").send_keys(QUESTION)
    browser.find_element(By.ID, "send-button").click()


def test_a_streamed_answer_with_its_agent_sources_and_lineage(browser, api, output_dir):
    ask(browser, api.url)

    # Tokens show up in the answer before the final event names the agent: the page streams.
    seen_partial = False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        answers = browser.find_elements(By.CSS_SELECTOR, ".message.assistant")
        agent = answers[-1].find_element(By.CSS_SELECTOR, ".agent").text if answers else ""
        text = answers[-1].find_element(By.CSS_SELECTOR, ".text").text if answers else ""
        if agent or (answers and "failed" in answers[-1].get_attribute("class")):
            break
        seen_partial = seen_partial or bool(text.strip())
        time.sleep(0.05)
    answer = browser.find_elements(By.CSS_SELECTOR, ".message.assistant")[-1]
    assert agent == "research", text_of(browser, "status") + answer.text
    assert seen_partial, "no token was shown before the final event"
    assert (
        "failed" not in answer.get_attribute("class")
        and "42" in answer.find_element(By.CLASS_NAME, "text").text
    )
    assert browser.find_elements(By.CSS_SELECTOR, ".message.user")[-1].text == QUESTION

    answer.find_element(By.CSS_SELECTOR, ".sources-box summary").click()
    sources = [s.text for s in answer.find_elements(By.CSS_SELECTOR, ".sources li")]
    # the zephyr passage: this module's domain, or an earlier test's copy of it (every domain is searched)
    assert any(s.lower().startswith("zephyr (") for s in sources), sources
    answer.find_element(By.CSS_SELECTOR, ".lineage-box summary").click()
    lineage = answer.find_element(By.CLASS_NAME, "lineage").text
    assert f"Domain {DOMAIN}" in lineage and "research by" in lineage and "Language model" in lineage
    link = wait_for(
        browser,
        lambda d: answer.find_elements(By.PARTIAL_LINK_TEXT, f"index run of {DOMAIN}"),
        "the lineage's index run link",
    )[0]
    assert "/runs/flow-run/" in link.get_attribute("href")

    down = answer.find_element(By.XPATH, ".//button[contains(., 'Not useful')]")
    down.click()
    answer.find_element(By.CSS_SELECTOR, ".correction textarea").send_keys(
        "42 rpm, with an oil-cooled gearbox."
    )
    answer.find_element(By.CSS_SELECTOR, ".correction button").click()
    status = "Thanks: your feedback is recorded."
    wait_for(browser, lambda d: answer.find_element(By.CLASS_NAME, "feedback-status").text == status, status)
    assert down.get_attribute("aria-pressed") == "true"
    screenshots(browser, output_dir, "web_chat")


def test_with_the_model_down_the_chat_says_so_and_still_shows_sources(browser, api_settings, tmp_path):
    env = {
        "CONVEYOR_LLM_BACKEND": "openai",
        "CONVEYOR_LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "CONVEYOR_DATABASE_URL": api_settings.sql_url,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
    }
    with ProcessServer(env, tmp_path / "api.log") as server:
        ask(browser, server.url)
        notice = wait_for(
            browser,
            lambda d: [n.text for n in d.find_elements(By.CSS_SELECTOR, ".llm-notice") if n.text],
            "notice",
        )[0]
        answer = browser.find_elements(By.CSS_SELECTOR, ".message.assistant")[-1]
        answer.find_element(By.CSS_SELECTOR, ".sources-box summary").click()
        sources = [s.text for s in answer.find_elements(By.CSS_SELECTOR, ".sources li")]
        assert "language model is unavailable" in notice and "sources found are listed below" in notice
        assert any(s.lower().startswith("zephyr (") for s in sources), sources
        assert text_of(browser, "status") == "The language model is unavailable."
        assert browser.find_element(By.ID, "message").get_attribute("value") == QUESTION  # kept to resend

        open_screen(browser, "dashboard")
        health = wait_for(browser, lambda d: "Unavailable" in text_of(d, "dashboard-llm"), "the LLM's health")
        assert health and "unreachable" in text_of(browser, "dashboard-llm")
