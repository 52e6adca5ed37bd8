"""Images and compose offline: hadolint, non-root, health checks, pinned bases, secrets from variables."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conveyor import workpools

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "deployments" / "docker" / "Dockerfile"
COMPOSE_DIR = REPO / "deployments" / "compose"
COMPOSE = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
SECRET_VARIABLE = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")


def stages() -> dict[str, list[str]]:
    """Instructions of each build stage, keyed by stage name (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found: dict[str, list[str]] = {}
    current = None
    for line in (line.strip() for line in text.splitlines()):
        if line.startswith("FROM "):
            current = line.split(" AS ")[-1].strip()
            found[current] = []
        elif current and line and not line.startswith("#"):
            found[current].append(line)
    return found


def instructions(stage: str) -> list[str]:
    """A stage's instructions plus those it inherits through `FROM <stage>`."""
    text = DOCKERFILE.read_text()
    parent = re.search(rf"^FROM (\S+) AS {stage}$", text, re.MULTILINE).group(1)
    inherited = instructions(parent) if parent in stages() else []
    return inherited + stages()[stage]


class TestDockerfile:
    def test_hadolint_is_clean(self):
        hadolint = Path(sys.executable).with_name("hadolint")
        done = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr

    def test_base_is_a_build_argument_with_a_pinned_default(self):
        first = DOCKERFILE.read_text().split("FROM", 1)[0]
        default = re.search(r"^ARG BASE=(\S+)$", first, re.MULTILINE).group(1)
        assert re.search(r":\d+\.\d+\.\d+-", default), "pin the base image's exact version"

    @pytest.mark.parametrize("target", ["flows", "api"])
    def test_targets_run_as_non_root_with_a_health_check(self, target: str):
        steps = instructions(target)
        users = [s.split()[1] for s in steps if s.startswith("USER ")]
        assert users and users[-1] not in {"root", "0"}
        assert any(s.startswith("HEALTHCHECK ") for s in steps)

    def test_api_health_check_calls_health(self):
        assert any("/health" in s for s in instructions("api") if s.startswith("HEALTHCHECK"))

    def test_installs_offline_with_the_project_torch_pin(self):
        install = " ".join(s for s in stages()["build"] if "pip install" in s)
        assert "--no-index" in install
        torch_pin = re.search(r'"(torch==[^"]+)"', (REPO / "pyproject.toml").read_text()).group(1)
        assert torch_pin in install

    def test_kubernetes_pods_use_the_image_user(self):
        uid = next(s.split()[1] for s in instructions("api") if s.startswith("USER "))
        manifest = (REPO / "deployments" / "kubernetes" / "api" / "api.yaml").read_text()
        assert f"runAsUser: {uid}" in manifest


class TestCompose:
    def test_the_whole_stack_is_there(self):
        assert {"prefect-db", "prefect-server", "prefect-worker", "mlflow-db", "mlflow", "api"} <= set(
            COMPOSE["services"]
        )

    @pytest.mark.parametrize("name", list(COMPOSE["services"]))
    def test_services_are_pinned_and_wait_for_healthy_dependencies(self, name: str):
        service = COMPOSE["services"][name]
        assert ":" in service["image"] and not service["image"].endswith(":latest")
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}
            assert "healthcheck" in COMPOSE["services"][dependency]
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), "publish on loopback only"

    def test_build_targets_exist(self):
        for service in COMPOSE["services"].values():
            if "build" in service:
                assert service["build"]["target"] in stages()
                assert (COMPOSE_DIR / service["build"]["context"] / service["build"]["dockerfile"]).is_file()

    def test_flow_image_matches_the_docker_pool(self):
        pool_image = workpools.template("docker")["variables"]["properties"]["image"]["default"]
        assert COMPOSE["services"]["prefect-worker"]["image"] == pool_image

    def test_secrets_come_only_from_required_variables(self):
        text = (COMPOSE_DIR / "compose.yaml").read_text()
        for key, value in re.findall(r"^\s*([A-Z_]*(?:PASSWORD|SECRET)[A-Z_]*): (.+)$", text, re.MULTILINE):
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value.strip()), f"{key} must be ${{VAR:?...}}"
        for url in re.findall(r"(?:postgresql\S*)://[^\s]+", text):
            assert re.search(r":\$\{[A-Z_]+:\?\}@", url), url
        example = (COMPOSE_DIR / "example.env").read_text()
        for line in example.splitlines():
            if SECRET_VARIABLE.search(line.split("=")[0]) and not line.startswith("#"):
                assert line.endswith("="), f"example.env must not carry a value: {line}"
