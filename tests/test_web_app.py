"""The web app in headless Chromium against the real API, Prefect, MLflow and LanceDB: sign-in and an expired
session, analytics on an uploaded CSV with the data agent, real train-tabular runs started from the training
form, then the dashboard that shows them; each screen kept as a screenshot at desktop and phone width."""

from typing import Annotated

import pytest
from prefect import flow
from pydantic import Field
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from conveyor.settings import DEVELOPMENT_ADMIN_PASSWORD
from flows.index_documents import index_documents
from flows.train_tabular import train_tabular
from serving import crud
from serving.core.security import create_access_token
from serving.db import make_engine, make_sessionmaker
from tests.browser import chromium, open_screen, screenshots, sign_in, text_of, visible, wait_for

# Small uploads show the size refusal; many requests per minute let the screens poll as they do.
API_SETTINGS = {"api_max_upload_bytes": 4096, "api_rate_limit_per_minute": 2000}
MODEL = "web-app-forest"
DOMAIN = "web-app-docs"
SHOPS = ("north", "south", "east")
SALES_CSV = "shop,units,price\n" + "".join(
    f"{SHOPS[i % 3]},{1 + i % 7},{10 + (i * 37) % 50}.5\n" for i in range(60)
)
RUN_TIMEOUT_S = 300


@flow(name="web-batch")
def web_batch(batch_size: Annotated[int, Field(ge=8, multiple_of=8)] = 32) -> int:
    """A flow whose schema has a rule the browser leaves to the API (multipleOf)."""
    return batch_size


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def signed_in(browser, api):
    browser.get(api.url)
    browser.execute_script("sessionStorage.clear()")
    browser.get(api.url)
    sign_in(browser, DEVELOPMENT_ADMIN_PASSWORD)
    wait_for(browser, lambda d: visible(d, "screen-dashboard"), "the dashboard after sign-in")
    return browser


@pytest.fixture(scope="module")
def deployments() -> None:
    """train-tabular and web-batch deployed on no pool: the API runs them in a local process."""
    train_tabular.to_deployment(name="web-app").apply()
    web_batch.to_deployment(name="web-app").apply()


@pytest.fixture(scope="module")
def domain() -> None:
    index_documents(
        domain=DOMAIN,
        documents=[
            {"id": "kiln", "text": "The glass kiln anneals bottles at 480 degrees for two hours."},
            {"id": "mould", "text": "Bottle moulds are machined from cast iron and oiled every shift."},
        ],
    )


def expired_token(api_settings) -> str:
    """A token for admin, signed with the API's key, that expired a minute ago."""
    with make_sessionmaker(make_engine(api_settings.sql_url))() as session:
        user = crud.get_user(session, "admin")
    assert user is not None
    return create_access_token("admin", user.password_hash, api_settings.secret_key.get_secret_value(), -1)


def test_a_wrong_password_is_refused_and_an_expired_session_returns_to_sign_in(browser, api, api_settings):
    browser.get(api.url)
    sign_in(browser, "not-the-password")
    error = wait_for(browser, lambda d: text_of(d, "login-error"), "the sign-in error")
    assert error == "Wrong username or password."
    assert not visible(browser, "nav")

    sign_in(browser, DEVELOPMENT_ADMIN_PASSWORD)
    wait_for(browser, lambda d: visible(d, "screen-dashboard"), "the dashboard after sign-in")
    assert text_of(browser, "whoami") == "admin"
    open_screen(browser, "chat")
    browser.find_element(By.ID, "message").send_keys("a draft the expiry must not lose")

    # The token expires while the page is open: the next request returns to sign-in, the draft stays.
    browser.execute_script(
        "sessionStorage.setItem('conveyor-token', arguments[0])", expired_token(api_settings)
    )
    browser.find_element(By.ID, "send-button").click()
    notice = wait_for(
        browser, lambda d: visible(d, "login") and text_of(d, "login-notice"), "the expiry notice"
    )
    assert "session has expired" in notice
    assert not visible(browser, "screen-chat")

    sign_in(browser, DEVELOPMENT_ADMIN_PASSWORD)
    wait_for(browser, lambda d: visible(d, "screen-chat"), "the chat screen again after signing in")
    assert browser.find_element(By.ID, "message").get_attribute("value") == "a draft the expiry must not lose"


def upload(browser, tmp_path, name: str, content: bytes, dataset_id: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    browser.find_element(By.ID, "upload-id").clear()
    browser.find_element(By.ID, "upload-file").send_keys(str(path))
    browser.find_element(By.ID, "upload-id").clear()
    browser.find_element(By.ID, "upload-id").send_keys(dataset_id)
    browser.find_element(By.ID, "upload-button").click()


def test_analytics_uploads_pages_summarises_charts_and_asks_the_data_agent(signed_in, tmp_path, output_dir):
    browser = signed_in
    open_screen(browser, "analytics")

    upload(browser, tmp_path, "photo.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "web_photo")
    refused = wait_for(browser, lambda d: text_of(d, "upload-error"), "the refusal of a non-CSV")
    assert refused.startswith("Upload refused (HTTP 422)") and "not a readable CSV" in refused
    upload(browser, tmp_path, "big.csv", SALES_CSV.encode() * 8, "web_big")
    refused = wait_for(
        browser, lambda d: "413" in text_of(d, "upload-error") and text_of(d, "upload-error"), "413"
    )
    assert "4096 bytes" in refused

    upload(browser, tmp_path, "web sales.csv", SALES_CSV.encode(), "web_sales")
    done = wait_for(browser, lambda d: text_of(d, "upload-status").startswith("Uploaded"), "the upload")
    assert done and text_of(browser, "upload-error") == ""
    assert "Uploaded web_sales version 1: 60 rows, 3 columns." == text_of(browser, "upload-status")
    wait_for(browser, lambda d: text_of(d, "rows-range") == "Rows 1–20 of 60", "the first page of rows")
    assert Select(browser.find_element(By.ID, "dataset-select")).first_selected_option.get_attribute(
        "value"
    ) == ("web_sales")
    browser.find_element(By.ID, "rows-next").click()
    wait_for(browser, lambda d: text_of(d, "rows-range") == "Rows 21–40 of 60", "the second page of rows")
    first_cell = browser.find_element(By.CSS_SELECTOR, "#rows-table tbody tr td").text
    assert first_cell == SHOPS[20 % 3]

    summary = wait_for(
        browser, lambda d: "units" in text_of(d, "summary-table") and text_of(d, "summary-table"), ""
    )
    assert "price" in summary and "3 unique" in summary
    drawn = "return Chart.getChart(document.getElementById(arguments[0]))?.data"
    histogram = wait_for(browser, lambda d: d.execute_script(drawn, "dist-chart"), "the distribution chart")
    assert sum(histogram["datasets"][0]["data"]) == 60
    totals = wait_for(browser, lambda d: d.execute_script(drawn, "group-chart"), "the totals chart")
    assert sorted(totals["labels"]) == sorted(SHOPS) and sum(totals["datasets"][1]["data"]) == 60
    assert browser.find_elements(By.CSS_SELECTOR, "#corr-table td.corr")

    browser.find_element(By.ID, "ask-question").send_keys("How many rows does each shop have?")
    browser.find_element(By.ID, "ask-button").click()
    answer = wait_for(browser, lambda d: text_of(d, "ask-answer"), "the data agent's answer", timeout_s=300)
    assert browser.find_element(By.CSS_SELECTOR, "#ask-answer .agent").text == "data", answer
    assert "no known dataset" not in answer and not browser.find_elements(
        By.CSS_SELECTOR, "#ask-answer .error"
    )
    screenshots(browser, output_dir, "web_analytics")


def set_field(browser, name: str, value: str) -> None:
    field = browser.find_element(By.NAME, name)
    field.clear()
    field.send_keys(value)


def field_error(browser, name: str) -> str:
    field = browser.find_element(By.NAME, name)
    return browser.find_element(By.ID, field.get_attribute("aria-describedby").split()[-1]).text


def choose(browser, deployment: str) -> None:
    Select(browser.find_element(By.ID, "train-deployment")).select_by_visible_text(deployment)


def run_to_the_end(browser) -> str:
    browser.find_element(By.ID, "train-start").click()
    ended = {"Completed", "Failed", "Crashed", "Cancelled"}
    wait_for(
        browser, lambda d: visible(d, "train-run") and text_of(d, "train-state") not in ended, "a new run"
    )
    return wait_for(
        browser, lambda d: text_of(d, "train-state") in ended and text_of(d, "train-state"), "the run's end",
        timeout_s=RUN_TIMEOUT_S,
    )  # fmt: skip


def test_training_validates_and_follows_runs_that_the_dashboard_then_shows(
    signed_in, deployments, domain, output_dir
):
    browser = signed_in
    open_screen(browser, "training")
    wait_for(
        browser, lambda d: d.find_elements(By.NAME, "params.forest.n_estimators"), "the train-tabular form"
    )
    choose(browser, "train-tabular/web-app")

    # Checked in the browser, from the schema: nothing is sent.
    set_field(browser, "params.forest.n_estimators", "0")
    browser.find_element(By.ID, "train-start").click()
    assert field_error(browser, "params.forest.n_estimators") == "Must be at least 1."
    assert text_of(browser, "train-error") == "Fix the field marked below."
    assert not visible(browser, "train-run")

    # Checked by the API only (multipleOf): its 422 reason shows next to the field.
    choose(browser, "web-batch/web-app")
    set_field(browser, "batch_size", "30")
    browser.find_element(By.ID, "train-start").click()
    refused = wait_for(browser, lambda d: text_of(d, "train-error"), "the API's refusal")
    assert refused.startswith("The API refused the parameters: web-batch/web-app: Validation failed")
    assert field_error(browser, "batch_size") == "30 is not a multiple of 8."
    assert not visible(browser, "train-run")

    choose(browser, "train-tabular/web-app")
    set_field(browser, "params.forest.n_estimators", "10")
    set_field(browser, "params.model_name", MODEL)
    set_field(browser, "params.target", "no_such_column")
    assert run_to_the_end(browser) == "Failed"
    assert "target column 'no_such_column' is missing" in text_of(browser, "train-failure")

    set_field(browser, "params.target", "malignant")
    assert run_to_the_end(browser) == "Completed", text_of(browser, "train-failure")
    result = wait_for(browser, lambda d: text_of(d, "train-result"), "the run's result")
    assert f"Model {MODEL} version 1: promoted to @champion" in result
    assert "test_accuracy" in result
    logs = wait_for(
        browser, lambda d: "[fit_tabular" in text_of(d, "train-logs") and text_of(d, "train-logs"), ""
    )
    assert "Beginning flow run" in logs
    screenshots(browser, output_dir, "web_training")

    # The dashboard: both runs, the model as @champion, the indexed domain, the language model.
    open_screen(browser, "dashboard")
    wait_for(browser, lambda d: text_of(d, "dashboard-status").startswith("Updated"), "the dashboard loaded")

    runs = browser.find_element(By.ID, "dashboard-runs")
    train_rows = [
        r.text for r in runs.find_elements(By.CSS_SELECTOR, "tbody tr") if "train-tabular" in r.text
    ]
    assert any("Completed" in r for r in train_rows) and any("Failed" in r for r in train_rows), runs.text
    links = [a.get_attribute("href") for a in runs.find_elements(By.CSS_SELECTOR, "a")]
    assert links and all("/runs/flow-run/" in link for link in links)

    model = next(
        r for r in browser.find_elements(By.CSS_SELECTOR, "#dashboard-models tbody tr") if MODEL in r.text
    )
    cells = [c.text for c in model.find_elements(By.TAG_NAME, "td")]
    assert cells[1] == "v1" and "test_accuracy" in cells[3], cells

    row = next(
        r for r in browser.find_elements(By.CSS_SELECTOR, "#dashboard-domains tbody tr") if DOMAIN in r.text
    )
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1:3] == ["2", "2"] and cells[4].startswith("Completed"), cells
    assert "/runs/flow-run/" in row.find_element(By.TAG_NAME, "a").get_attribute("href")

    llm = text_of(browser, "dashboard-llm")
    assert "Healthy" in llm and "embedded" in llm
    screenshots(browser, output_dir, "web_dashboard")
