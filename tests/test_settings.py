"""Settings: local defaults, clear errors for bad values, no default secrets outside development."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor import tracking
from conveyor.settings import ConfigurationError, Settings, get_settings, reset_settings

REPO = Path(__file__).resolve().parent.parent


class TestDefaults:
    def test_every_local_store_lives_under_the_state_folder(self, settings):
        state = str(settings.state_dir)
        assert settings.tracking_uri == f"sqlite:///{state}/mlflow.db"
        assert settings.knowledge_uri.startswith(state)
        assert settings.sql_url.startswith(f"sqlite:///{state}")
        assert str(settings.artifact_root).startswith(state)

    def test_development_has_a_known_admin_password_production_has_none(self):
        assert Settings(environment="development").initial_admin_password
        assert Settings(environment="production", secret_key="s" * 32).initial_admin_password is None

    def test_an_empty_variable_means_the_default(self, monkeypatch):
        monkeypatch.setenv("CONVEYOR_HOME", "")
        assert Settings().home == Path(".conveyor")


class TestBadConfiguration:
    def test_unknown_value_names_the_setting(self, monkeypatch):
        monkeypatch.setenv("CONVEYOR_LLM_BACKEND", "telepathy")
        reset_settings()
        try:
            with pytest.raises(ConfigurationError, match="CONVEYOR_LLM_BACKEND"):
                get_settings()
        finally:
            monkeypatch.delenv("CONVEYOR_LLM_BACKEND")
            reset_settings()

    def test_production_refuses_the_development_secret(self):
        with pytest.raises(ValueError, match="CONVEYOR_SECRET_KEY"):
            Settings(environment="production")

    def test_unreachable_tracking_uri_names_the_setting(self, monkeypatch):
        monkeypatch.setenv("CONVEYOR_MLFLOW_TRACKING_URI", "http://127.0.0.1:9/")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
        reset_settings()
        try:
            with pytest.raises(ConfigurationError, match="CONVEYOR_MLFLOW_TRACKING_URI"):
                tracking.check_reachable()
        finally:
            monkeypatch.delenv("CONVEYOR_MLFLOW_TRACKING_URI")
            reset_settings()
        assert tracking.check_reachable().startswith("sqlite:///")


class TestTracking:
    def test_runs_carry_provenance_and_land_in_sqlite(self):
        with tracking.start_run("settings-test", run_name="probe", tags={"purpose": "test"}) as run:
            pass
        stored = tracking.client().get_run(run.info.run_id)
        assert stored.data.tags["purpose"] == "test"
        assert stored.info.status == "FINISHED"
        assert stored.info.artifact_uri.startswith("file://")


class TestProcessSwitches:
    """`import conveyor` changes nothing; entry points call `runtime.configure()`, which reads settings."""

    PROBE = """
import json, os, warnings
env, filters = dict(os.environ), list(warnings.filters)
import conveyor, conveyor.runtime, conveyor.pipeline
imported = {"env": dict(os.environ) == env, "filters": warnings.filters == filters}
from conveyor import runtime
runtime.configure()
added = [f for f in warnings.filters if f not in filters]
print(json.dumps(imported | {
    "prefect_home": os.environ.get("PREFECT_HOME"),
    "path_unchanged": os.environ["PATH"] == env["PATH"],
    "untargeted_filters": [str(f) for f in added if f[1] is None],
}))
"""

    def run_probe(self, cwd: Path) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "PREFECT_"))}
        done = subprocess.run(
            [sys.executable, "-c", self.PROBE],
            cwd=cwd,
            env=env | {"PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.splitlines()[-1])

    def test_importing_conveyor_leaves_the_environment_and_warnings_alone(self, tmp_path):
        probe = self.run_probe(tmp_path)
        assert probe["env"] and probe["filters"]

    def test_configure_takes_the_state_folder_from_dotenv_and_leaves_path_alone(self, tmp_path):
        (tmp_path / ".env").write_text("CONVEYOR_HOME=elsewhere\n")
        probe = self.run_probe(tmp_path)
        assert probe["prefect_home"] == str(tmp_path / "elsewhere" / "prefect")
        assert probe["path_unchanged"] and probe["untargeted_filters"] == []
