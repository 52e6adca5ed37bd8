"""Test session: an isolated state folder and one Prefect API server for the whole run."""

import os
import shutil
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STATE = Path(tempfile.mkdtemp(prefix="conveyor-test-"))
os.environ["CONVEYOR_HOME"] = str(STATE)
os.environ["PREFECT_HOME"] = str(STATE / "prefect")
os.environ["CONVEYOR_DATA_DIR"] = str(STATE / "data")
# The models assembled once for `make run` and every test session (1.6 GB: not rebuilt per session).
os.environ.setdefault("CONVEYOR_LLM_MODELS_DIR", str(REPO / ".conveyor" / "models"))
os.environ.pop("CONVEYOR_PREFECT_API_URL", None)
os.environ.pop("PREFECT_API_URL", None)
# The fast model plays every role unless a test asks for the quality model (configure(llm_quality_roles=...)):
# tests that check what the quality model makes (plans, the example report) opt in; the rest stay fast.
os.environ["CONVEYOR_LLM_QUALITY_ROLES"] = "[]"

from conveyor import runtime  # noqa: E402

runtime.configure()  # the offline/telemetry switches and PREFECT_HOME, before prefect loads

import pytest  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402

from conveyor.settings import DEVELOPMENT_ADMIN_PASSWORD, get_settings, reset_settings  # noqa: E402

OUTPUT = REPO / "test-output"


def pytest_unconfigure(config: pytest.Config) -> None:
    """The session's state folder goes with the session (artifacts worth keeping are in test-output/)."""
    shutil.rmtree(STATE, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def prefect_api():
    """One real Prefect API (temporary server on SQLite) shared by every test."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def configure(monkeypatch):
    """`configure(name=value, ...)` sets `CONVEYOR_<NAME>` for one test and rebuilds the settings object;
    both are restored afterwards."""

    def apply(**values: object) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"CONVEYOR_{name.upper()}", str(value))
        reset_settings()

    yield apply
    monkeypatch.undo()
    reset_settings()


@pytest.fixture(scope="session")
def settings():
    reset_settings()
    return get_settings()


@pytest.fixture(scope="session", autouse=True)
def prepared_data() -> Path:
    """The repo's datasets built by `data/prepare.py` into the test state folder (CONVEYOR_DATA_DIR)."""
    from data.prepare import main as prepare

    out = STATE / "data"
    prepare(["--out", str(out)])
    return out


@pytest.fixture(scope="session")
def output_dir() -> Path:
    """Where tests keep artifacts worth looking at (screenshots, reports)."""
    OUTPUT.mkdir(exist_ok=True)
    return OUTPUT


@pytest.fixture(scope="module")
def api_settings(settings, tmp_path_factory, request):
    """A module's API settings: its own user database plus the module's `API_SETTINGS` overrides."""
    database = tmp_path_factory.mktemp("api") / "users.db"
    overrides = getattr(request.module, "API_SETTINGS", {})
    return settings.model_copy(update={"database_url": f"sqlite:///{database}", **overrides})


@pytest.fixture(scope="module")
def api(api_settings):
    """The chat API over real HTTP on a free local port, in this process (sharing its loaded models)."""
    from serving.app import create_app
    from serving.testing import ThreadedServer

    with ThreadedServer(create_app(api_settings)) as server:
        yield server


@pytest.fixture(scope="module")
def auth(api) -> dict[str, str]:
    """Bearer headers of the development admin."""
    from serving.testing import login

    return login(api.url, "admin", DEVELOPMENT_ADMIN_PASSWORD)


@pytest.fixture(autouse=True)
def _no_mlflow_run_left_active():
    """A test that fails inside an MLflow run must not leave it active for the next test."""
    yield
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run(status="KILLED")
