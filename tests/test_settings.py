"""Settings: local defaults, clear errors for bad values, no default secrets outside development."""

import pytest

from conveyor import tracking
from conveyor.settings import ConfigurationError, Settings, get_settings, reset_settings


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
