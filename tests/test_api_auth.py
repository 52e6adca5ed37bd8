"""Chat API auth: tokens, first admin, user management (routes and CLI), rate limits, secrets kept out."""

import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from conveyor.settings import DEVELOPMENT_ADMIN_PASSWORD, DEVELOPMENT_SECRET, Settings
from serving.app import create_app
from serving.testing import REPO, ProcessServer, ThreadedServer, free_port, login

ADMIN = ("admin", DEVELOPMENT_ADMIN_PASSWORD)


def token_for(username: str, secret: str, expires_in: timedelta, version: str) -> str:
    now = datetime.now(UTC)
    claims = {"sub": username, "ver": version, "iat": now, "exp": now + expires_in}
    return jwt.encode(claims, secret, algorithm="HS256")


class TestTokens:
    def test_first_admin_comes_from_settings_and_signs_in(self, api, auth):
        me = httpx.get(f"{api.url}/users/me", headers=auth)
        assert me.status_code == 200
        assert me.json()["username"] == "admin" and me.json()["is_admin"] is True

    def test_wrong_password_is_401_without_echoing_it(self, api):
        response = httpx.post(
            f"{api.url}/auth/token", data={"username": "admin", "password": "hunter2-wrong"}
        )
        assert response.status_code == 401
        assert "hunter2-wrong" not in response.text

    def test_unknown_user_is_401(self, api):
        response = httpx.post(f"{api.url}/auth/token", data={"username": "nobody", "password": "whatever1"})
        assert response.status_code == 401

    @pytest.mark.parametrize("username", ["x" * 300, "../admin", "admin/20/15/minute"])
    def test_impossible_usernames_are_401(self, api, username):
        response = httpx.post(f"{api.url}/auth/token", data={"username": username, "password": "whatever1"})
        assert response.status_code == 401 and response.json()["detail"] == "wrong username or password"

    @pytest.mark.parametrize("path", ["/users/me", "/datasets", "/conversations", "/v1/models", "/metrics"])
    def test_missing_token_is_401(self, api, path):
        response = httpx.get(f"{api.url}{path}")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"

    def test_forged_token_is_401(self, api, auth):
        version = jwt.decode(auth["Authorization"].split()[1], options={"verify_signature": False})["ver"]
        forged = token_for("admin", "not-the-secret", timedelta(minutes=5), version)
        response = httpx.get(f"{api.url}/users/me", headers={"Authorization": f"Bearer {forged}"})
        assert response.status_code == 401

    def test_expired_token_is_401(self, api, auth):
        version = jwt.decode(auth["Authorization"].split()[1], options={"verify_signature": False})["ver"]
        expired = token_for("admin", DEVELOPMENT_SECRET, timedelta(minutes=-1), version)
        response = httpx.get(f"{api.url}/users/me", headers={"Authorization": f"Bearer {expired}"})
        assert response.status_code == 401

    def test_garbage_token_is_401(self, api):
        response = httpx.get(f"{api.url}/users/me", headers={"Authorization": "Bearer not.a.jwt"})
        assert response.status_code == 401

    def test_health_and_ready_need_no_token(self, api):
        assert httpx.get(f"{api.url}/health").json() == {"status": "ok"}
        assert httpx.get(f"{api.url}/ready", timeout=120).status_code in (200, 503)


class TestUserManagement:
    def test_admin_adds_lists_and_removes_a_user(self, api, auth):
        created = httpx.post(
            f"{api.url}/users", headers=auth, json={"username": "ada", "password": "analytical1"}
        )
        assert created.status_code == 201 and created.json()["is_admin"] is False
        ada = login(api.url, "ada", "analytical1")
        assert "ada" in [u["username"] for u in httpx.get(f"{api.url}/users", headers=auth).json()]

        assert httpx.get(f"{api.url}/users", headers=ada).status_code == 403
        assert (
            httpx.post(
                f"{api.url}/users", headers=ada, json={"username": "eve", "password": "x" * 10}
            ).status_code
            == 403
        )

        assert httpx.delete(f"{api.url}/users/ada", headers=auth).status_code == 204
        assert httpx.get(f"{api.url}/users/me", headers=ada).status_code == 401
        assert httpx.delete(f"{api.url}/users/ada", headers=auth).status_code == 404

    def test_duplicate_user_is_409(self, api, auth):
        body = {"username": "grace", "password": "compiler123"}
        assert httpx.post(f"{api.url}/users", headers=auth, json=body).status_code == 201
        assert httpx.post(f"{api.url}/users", headers=auth, json=body).status_code == 409

    def test_short_password_is_422_without_echoing_it(self, api, auth):
        response = httpx.post(f"{api.url}/users", headers=auth, json={"username": "bob", "password": "tiny7"})
        assert response.status_code == 422
        assert "tiny7" not in response.text

    def test_password_change_revokes_old_tokens(self, api, auth):
        httpx.post(f"{api.url}/users", headers=auth, json={"username": "linus", "password": "first-pass"})
        old = login(api.url, "linus", "first-pass")
        changed = httpx.put(f"{api.url}/users/linus/password", headers=old, json={"password": "second-pass"})
        assert changed.status_code == 204
        assert httpx.get(f"{api.url}/users/me", headers=old).status_code == 401
        assert (
            httpx.get(f"{api.url}/users/me", headers=login(api.url, "linus", "second-pass")).status_code
            == 200
        )

    def test_users_cannot_change_each_others_passwords(self, api, auth):
        httpx.post(f"{api.url}/users", headers=auth, json={"username": "mallory", "password": "mallory-pw"})
        mallory = login(api.url, "mallory", "mallory-pw")
        response = httpx.put(
            f"{api.url}/users/admin/password", headers=mallory, json={"password": "taken-over"}
        )
        assert response.status_code == 403

    def test_admin_cannot_remove_themselves(self, api, auth):
        assert httpx.delete(f"{api.url}/users/admin", headers=auth).status_code == 409


class TestUsersCommand:
    def run(self, database_url: str, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
        env = os.environ | {"CONVEYOR_DATABASE_URL": database_url}
        return subprocess.run(
            [sys.executable, "-m", "serving.users", *args],
            input=password,
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=120,
        )

    def test_add_list_set_password_remove(self, api, api_settings):
        url = api_settings.sql_url
        added = self.run(url, "add", "carol", "--admin", "--password-stdin", password="carol-pass1\n")
        assert added.returncode == 0, added.stderr
        assert "carol" in self.run(url, "list").stdout
        login(api.url, "carol", "carol-pass1")

        changed = self.run(url, "set-password", "carol", "--password-stdin", password="carol-pass2\n")
        assert changed.returncode == 0, changed.stderr
        login(api.url, "carol", "carol-pass2")

        assert self.run(url, "remove", "carol").returncode == 0
        assert "carol" not in self.run(url, "list").stdout

    def test_bad_input_is_a_message_not_a_traceback(self, api_settings):
        short = self.run(api_settings.sql_url, "add", "dave", "--password-stdin", password="short\n")
        assert short.returncode == 2 and "password must be" in short.stderr
        assert "Traceback" not in short.stderr
        missing = self.run(api_settings.sql_url, "remove", "nobody-here")
        assert missing.returncode == 2 and "no user 'nobody-here'" in missing.stderr


class TestRateLimit:
    def test_requests_past_the_limit_get_429_with_retry_after(self, api_settings):
        with ThreadedServer(
            create_app(api_settings.model_copy(update={"api_rate_limit_per_minute": 5}))
        ) as server:
            headers = login(server.url, *ADMIN)
            statuses = [httpx.get(f"{server.url}/users/me", headers=headers).status_code for _ in range(8)]
            limited = httpx.get(f"{server.url}/users/me", headers=headers)
        assert statuses[:5] == [200] * 5
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


class TestConfiguration:
    def test_api_does_not_start_without_its_rate_limit_store(self, tmp_path):
        port = free_port()  # nothing listens there
        env = {"CONVEYOR_RATE_LIMIT_STORAGE_URL": f"redis://:hunter2-redis@127.0.0.1:{port}"}
        with pytest.raises(RuntimeError, match="exited"), ProcessServer(env, tmp_path / "api.log"):
            pass
        log = (tmp_path / "api.log").read_text()
        assert f"CONVEYOR_RATE_LIMIT_STORAGE_URL: 127.0.0.1:{port} does not answer" in log
        assert "hunter2-redis" not in log

    def test_production_refuses_the_development_secret(self):
        with pytest.raises(ValueError, match="CONVEYOR_SECRET_KEY"):
            Settings(environment="production")

    def test_api_does_not_start_in_production_with_default_secret(self, tmp_path):
        env = os.environ | {"CONVEYOR_ENVIRONMENT": "production", "CONVEYOR_HOME": str(tmp_path)}
        env.pop("CONVEYOR_SECRET_KEY", None)
        result = subprocess.run(
            [sys.executable, "-c", "import serving.app"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=180,
        )
        assert result.returncode != 0
        assert "CONVEYOR_SECRET_KEY must be set outside development" in result.stderr


def test_logs_and_errors_carry_no_secret(api, auth, caplog):
    password = "sup3r-secret-pw"
    with caplog.at_level(logging.DEBUG):
        httpx.post(f"{api.url}/users", headers=auth, json={"username": "trent", "password": password})
        token = login(api.url, "trent", password)["Authorization"].split()[1]
        httpx.get(f"{api.url}/users/me", headers={"Authorization": f"Bearer {token}"})
        bad = httpx.post(f"{api.url}/auth/token", data={"username": "trent", "password": password + "x"})
        # The access line is written once the response is sent, so it may trail the client by a moment.
        deadline = time.monotonic() + 10
        while (
            not any('"user": "trent"' in r.getMessage() for r in caplog.records)
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
    assert bad.status_code == 401 and password not in bad.text
    access_lines = [r.getMessage() for r in caplog.records if r.name == "conveyor.access"]
    assert any('"user": "trent"' in line and '"path": "/users/me"' in line for line in access_lines)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert password not in logged and token not in logged
