"""Images and compose: hadolint, non-root, health checks, pinned bases, secrets; built images run for real."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from conveyor import workpools
from serving.testing import poll

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "deployments" / "docker" / "Dockerfile"
COMPOSE_DIR = REPO / "deployments" / "compose"
COMPOSE = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
SECRET_VARIABLE = re.compile(r"PASSWORD|SECRET|TOKEN|KEY")


SANDBOX_SECURITY = [f"--security-opt={option}" for option in COMPOSE["services"]["api"]["security_opt"]]
SANDBOX_PROBE = (
    "import json, socket; from agents.sandbox import run_code, SandboxUnavailable\n"
    "try:\n"
    "    out = run_code('import os, socket\\nresult = os.getuid()\\n"
    'socket.create_connection(("127.0.0.1", 8000), timeout=2)\')\n'
    "    print(json.dumps({'isolation': out.isolation, 'error': out.error}))\n"
    "except SandboxUnavailable as exc:\n"
    "    print(json.dumps({'refused': str(exc)}))\n"
)


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
    @pytest.mark.parametrize(
        "dockerfile", [DOCKERFILE, DOCKERFILE.with_name("postgres.Dockerfile")], ids=Path.name.fget
    )
    def test_hadolint_is_clean(self, dockerfile: Path):
        hadolint = Path(sys.executable).with_name("hadolint")
        done = subprocess.run([str(hadolint), str(dockerfile)], capture_output=True, text=True)
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
        install = " ".join(s for s in instructions("flows") if "pip install" in s)
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
        image = re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", service["image"])  # an overridable image's default
        assert re.fullmatch(r"[a-z0-9./-]+:[\w.-]+", image) and not image.endswith(":latest"), image
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


DOCKER = "/usr/bin/docker"  # Debian's client; `make test-containers` starts the daemon and builds the images
VERSION = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE).group(1)
RUNS_CONTAINERS = pytest.mark.skipif(
    os.environ.get("CONVEYOR_TEST_CONTAINERS") != "1",
    reason="builds and runs real images: `make test-containers` (root dockerd, deployments/docker/build.sh)",
)


def docker(*args: str) -> str:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def get_json(url: str) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except (urllib.error.URLError, ConnectionError):
        return None


@RUNS_CONTAINERS
class TestImagesRun:
    @pytest.fixture(scope="class")
    def api(self):
        """The API image running on a free loopback port, once /health answers; removed afterwards."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        name, url = f"conveyor-api-test-{os.getpid()}", f"http://127.0.0.1:{port}"
        docker(
            "run",
            "--detach",
            "--name",
            name,
            "--publish",
            f"127.0.0.1:{port}:8000",
            *SANDBOX_SECURITY,
            f"conveyor-api:{VERSION}",
        )
        try:
            end = time.monotonic() + 180
            while get_json(f"{url}/health") is None:
                if (
                    time.monotonic() > end
                    or docker("inspect", "--format", "{{.State.Running}}", name) != "true"
                ):
                    pytest.fail(f"/health never answered; container log:\n{docker('logs', name)}")
                time.sleep(1)
            yield name, url
        finally:
            subprocess.run([DOCKER, "rm", "--force", name], capture_output=True)

    def test_api_container_answers_health_on_loopback(self, api):
        _, url = api
        assert get_json(f"{url}/health") == (200, {"status": "ok"})

    def test_api_container_runs_as_the_image_user_and_turns_healthy(self, api):
        name, _ = api
        assert docker("exec", name, "id", "-u") == "10001"

        def health_once_checked() -> str | None:
            status = docker("inspect", "--format", "{{.State.Health.Status}}", name)
            return None if status == "starting" else status

        assert poll(health_once_checked, 180, "the image's HEALTHCHECK ran") == "healthy"

    def test_api_container_loads_the_model_and_its_stores(self, api):
        _, url = api
        _, body = get_json(
            f"{url}/ready"
        )  # orchestration is left out: no Prefect server beside the container
        checks = {name: body["checks"][name] for name in ("database", "tracking", "knowledge", "llm")}
        assert checks == dict.fromkeys(checks, "ok"), body

    def test_the_sandbox_isolates_model_code_in_the_api_container(self, api):
        """With the compose file's security options, code runs under bubblewrap as uid 10001's sandbox:
        the API on 127.0.0.1:8000 inside the same container is out of its reach."""
        name, _ = api
        out = json.loads(docker("exec", name, "python", "-c", SANDBOX_PROBE).splitlines()[-1])
        assert out["isolation"] == "bubblewrap" and out["error"].startswith("ConnectionRefusedError"), out

    def test_without_the_security_options_the_sandbox_refuses_to_run_code(self):
        """Docker's default profiles forbid user namespaces: no code runs, and the error names the fix."""
        printed = docker("run", "--rm", f"conveyor-api:{VERSION}", "python", "-c", SANDBOX_PROBE)
        out = json.loads(printed.splitlines()[-1])
        assert "CONVEYOR_SANDBOX_ISOLATION=process" in out["refused"], out

    def test_flows_image_imports_the_pipeline_stack(self):
        code = "import conveyor, flows, prefect, lancedb, llama_cpp, flwr, torch; print(torch.__version__)"
        assert docker("run", "--rm", f"conveyor-flows:{VERSION}", "python", "-c", code) == "2.13.0+cpu"
