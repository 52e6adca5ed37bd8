"""deployments/compose/compose.yaml: valid Compose, checked offline; with an engine, the stack run for real.

The static checks use Debian's `docker-compose` 1.29 (SYSTEM_PACKAGES in the Makefile): its `config` command
interpolates the file with a test environment and validates it against its copy of the Compose
specification's JSON schema, which the tests then apply once more (with `jsonschema`) to the interpolated
file *with* its top-level `name:` (a key that specification copy predates; Compose v2 reads it). Compose v1
refuses `name:`, so every v1 run here drops that one line and passes the same name with `-p`.

The stack tests run only with CONVEYOR_TEST_CONTAINERS=1 (`make test-containers`, as root: a private dockerd,
images from deployments/docker/build.sh) and need 127.0.0.1:4200, :5000 and :8000 free.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml

from conveyor.settings import Settings
from serving.testing import poll

REPO = Path(__file__).resolve().parent.parent
COMPOSE_DIR = REPO / "deployments" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
COMPOSE_V1 = shutil.which("docker-compose") or "/usr/bin/docker-compose"
# Compose's rule for project names (compose-spec: "lowercase letters, digits, dashes and underscores").
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
SECRETS = ("PREFECT_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "CONVEYOR_SECRET_KEY", "CONVEYOR_ADMIN_PASSWORD")
OWN_VARIABLES = {*SECRETS, "DOCKER_SOCKET", "COMPOSE_PROJECT_NAME", "COMPOSE_FILE"}


def compose_spec() -> dict | None:
    """The Compose specification's JSON schema shipped in Debian's docker-compose, with `name` added."""
    found = subprocess.run(
        ["/usr/bin/python3", "-c", "import compose.config as c, os; print(os.path.dirname(c.__file__))"],
        capture_output=True,
        text=True,
    )
    path = Path(found.stdout.strip()) / "compose_spec.json"
    if found.returncode != 0 or not path.is_file():
        return None
    spec = json.loads(path.read_text())
    # As the specification defines it since 2022 (its project-name rule is checked separately).
    spec["properties"].setdefault("name", {"type": "string"})
    return spec


SPEC = compose_spec()
NEEDS_COMPOSE_V1 = pytest.mark.skipif(
    SPEC is None or not Path(COMPOSE_V1).is_file(),
    reason="Debian's docker-compose is not installed: `make system-deps` as root (it is in SYSTEM_PACKAGES)",
)


def without_name(text: str) -> tuple[str, str]:
    """The file without its top-level `name:` line (Compose v1 refuses it), and that name."""
    match = re.search(r"^name: *(\S+) *\n", text, re.MULTILINE)
    assert match, "compose.yaml names its project (top-level name:)"
    return text[: match.start()] + text[match.end() :], match.group(1)


def write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def throwaway_env() -> dict[str, str]:
    """Throw-away values for every secret the file requires (never the committed example)."""
    return {key: secrets.token_hex(16) for key in SECRETS}


def compose_v1(
    env_file: Path, text: str, *args: str, tmp: Path, project: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    """`docker-compose ARGS` on `text` (a compose file without `name:`) as if in deployments/compose."""
    file = tmp / f"compose-v1-{secrets.token_hex(4)}.yaml"
    file.write_text(text)
    command = [COMPOSE_V1, "--env-file", str(env_file), "--project-directory", str(COMPOSE_DIR)]
    command += ["--project-name", project, "--file", str(file), *args]
    # Nothing from the caller's environment may fill in a variable the env file should.
    environment = {
        k: v for k, v in os.environ.items() if k not in OWN_VARIABLES and not k.startswith("CONVEYOR_")
    }
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)


def render(text: str, env: dict[str, str], tmp: Path) -> tuple[dict | None, str]:
    """(`docker-compose config` of the file plus its `name:`, or None; v1's or the schema's complaint)."""
    body, name = without_name(text)
    done = compose_v1(write_env(tmp / "test.env", env), body, "config", tmp=tmp, project=name)
    if done.returncode != 0:
        return None, done.stderr
    rendered = {"name": name, **yaml.safe_load(done.stdout)}
    errors = sorted(jsonschema.Draft201909Validator(SPEC).iter_errors(rendered), key=str)
    if errors:
        return None, "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)
    return rendered, ""


@NEEDS_COMPOSE_V1
class TestComposeFileIsValid:
    def test_the_file_renders_and_follows_the_compose_specification(self, tmp_path: Path):
        text = COMPOSE_FILE.read_text()
        env = throwaway_env()
        rendered, problem = render(text, env, tmp_path)
        assert rendered is not None, problem
        assert PROJECT_NAME.match(rendered["name"])
        services = rendered["services"]
        # Defaults: the official postgres image and the host's usual Docker socket.
        assert services["prefect-db"]["image"] == services["mlflow-db"]["image"] == "postgres:16.6-bookworm"
        assert "/var/run/docker.sock:/var/run/docker.sock:rw" in services["prefect-worker"]["volumes"]
        # Secrets reach their services only through the env file.
        prefect_db = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
        assert f":{env['PREFECT_DB_PASSWORD']}@prefect-db:5432/" in prefect_db
        assert services["prefect-db"]["environment"]["POSTGRES_PASSWORD"] == env["PREFECT_DB_PASSWORD"]
        mlflow_store = next(a for a in services["mlflow"]["command"] if a.startswith("--backend-store-uri="))
        assert f":{env['MLFLOW_DB_PASSWORD']}@mlflow-db:5432/" in mlflow_store
        assert services["api"]["environment"]["CONVEYOR_SECRET_KEY"] == env["CONVEYOR_SECRET_KEY"]

    def test_the_api_calls_the_llm_service(self, tmp_path: Path):
        rendered, problem = render(COMPOSE_FILE.read_text(), throwaway_env(), tmp_path)
        assert rendered is not None, problem
        api, llm = rendered["services"]["api"], rendered["services"]["llm"]
        command = shlex.split(llm["command"][-1])
        option = dict(zip(command, command[1:], strict=False))
        assert llm["image"] == api["image"] and "ports" not in llm  # reached on the stack's network only
        assert api["environment"]["CONVEYOR_LLM_BACKEND"] == "openai"
        assert api["environment"]["CONVEYOR_LLM_BASE_URL"] == f"http://llm:{option['--port']}/v1"
        assert option["--model_alias"] == Settings().llm_model  # the model name the API asks for
        assert f"127.0.0.1:{option['--port']}/v1/models" in llm["healthcheck"]["test"][-1]
        assert api["depends_on"]["llm"] == {"condition": "service_healthy"}
        # the GGUF is assembled once into the state volume
        assert "model_file()" in option["--model"] and "conveyor-state:/var/lib/conveyor:rw" in llm["volumes"]

    def test_local_images_and_socket_are_overridable(self, tmp_path: Path):
        env = throwaway_env() | {
            "CONVEYOR_POSTGRES_IMAGE": "conveyor-postgres:15-bookworm",
            "CONVEYOR_BASE_IMAGE": "conveyor-base:bookworm",
            "DOCKER_SOCKET": "/srv/engine/docker.sock",
        }
        rendered, problem = render(COMPOSE_FILE.read_text(), env, tmp_path)
        assert rendered is not None, problem
        services = rendered["services"]
        assert (
            services["prefect-db"]["image"]
            == services["mlflow-db"]["image"]
            == "conveyor-postgres:15-bookworm"
        )
        assert "/srv/engine/docker.sock:/var/run/docker.sock:rw" in services["prefect-worker"]["volumes"]
        assert {s["build"]["args"]["BASE"] for s in services.values() if "build" in s} == {
            "conveyor-base:bookworm"
        }

    @pytest.mark.parametrize("missing", SECRETS)
    def test_a_missing_secret_stops_compose(self, tmp_path: Path, missing: str):
        env = throwaway_env()
        del env[missing]
        rendered, problem = render(COMPOSE_FILE.read_text(), env, tmp_path)
        assert rendered is None and missing in problem

    @pytest.mark.parametrize(
        "breakage",
        [
            "misspelt service key",
            "unknown depends_on condition",
            "ports as a string",
            "unknown top-level key",
            "project name with capitals",
        ],
    )
    def test_a_broken_file_is_refused(self, tmp_path: Path, breakage: str):
        original = yaml.safe_load(COMPOSE_FILE.read_text())
        broken = copy.deepcopy(original)
        if breakage == "misspelt service key":
            broken["services"]["mlflow"]["helthcheck"] = broken["services"]["mlflow"].pop("healthcheck")
        elif breakage == "unknown depends_on condition":
            broken["services"]["api"]["depends_on"]["mlflow"] = {"condition": "service_ready"}
        elif breakage == "ports as a string":
            broken["services"]["api"]["ports"] = "127.0.0.1:8000:8000"
        elif breakage == "unknown top-level key":
            broken["service"] = broken.pop("services")
        elif breakage == "project name with capitals":
            broken["name"] = "Conveyor"
        assert broken != original
        rendered, problem = render(yaml.safe_dump(broken, sort_keys=False), throwaway_env(), tmp_path)
        refused = rendered is None or not PROJECT_NAME.match(rendered["name"])
        assert refused, f"{breakage}: accepted"

    def test_the_file_dumped_as_the_broken_copies_are_passes(self, tmp_path: Path):
        """So what the broken copies are refused for is their breakage, not the YAML round trip."""
        original = yaml.safe_load(COMPOSE_FILE.read_text())
        assert render(yaml.safe_dump(original, sort_keys=False), throwaway_env(), tmp_path)[0] is not None


# --- The stack, for real ---------------------------------------------------------------------------------

RUNS_CONTAINERS = pytest.mark.skipif(
    os.environ.get("CONVEYOR_TEST_CONTAINERS") != "1",
    reason="brings the compose stack up on a Docker engine: `make test-containers` (root dockerd, build.sh)",
)
PORTS = {"prefect-server": 4200, "mlflow": 5000, "api": 8000}
LOCAL_IMAGES = {
    "CONVEYOR_POSTGRES_IMAGE": "conveyor-postgres:15-bookworm",
    "CONVEYOR_BASE_IMAGE": "conveyor-base:bookworm",
}
TEST_PROJECT = "conveyor-test"
CHECK_FLOW = """\
from pathlib import Path

from prefect import flow


@flow(log_prints=True)
def check(token: str):
    Path("/var/lib/conveyor/compose-check.txt").write_text(token)
    print(f"hello from the docker pool: {token}")
"""


def http(method: str, url: str, body: dict | None = None) -> tuple[int, str] | None:
    """(status, body text), or None while nothing answers."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def docker_pool_exists() -> bool:
    answer = http("GET", "http://127.0.0.1:4200/api/work_pools/docker")
    return answer is not None and answer[0] == 200


class Stack:
    def __init__(self, tmp: Path, env: dict[str, str]):
        self.tmp, self.env = tmp, env
        self.body, _ = without_name(COMPOSE_FILE.read_text())
        self.env_file = write_env(tmp / "stack.env", env)

    def compose(self, *args: str, timeout: float = 300) -> str:
        done = compose_v1(
            self.env_file, self.body, *args, tmp=self.tmp, project=TEST_PROJECT, timeout=timeout
        )
        assert done.returncode == 0, f"docker-compose {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def psql(self, service: str, database: str, query: str) -> str:
        return self.compose(
            "exec", "-T", service, "psql", "-U", database, "-d", database, "-tAc", query
        ).strip()


@RUNS_CONTAINERS
class TestComposeStackRuns:
    @pytest.fixture(scope="class")
    def stack(self, tmp_path_factory):
        docker_host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        assert docker_host.startswith("unix://"), f"the worker mounts a local socket, not {docker_host}"
        for service, port in PORTS.items():
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    pytest.fail(f"127.0.0.1:{port} ({service}) is taken: stop what listens there first")
        env = throwaway_env() | LOCAL_IMAGES | {"DOCKER_SOCKET": docker_host.removeprefix("unix://")}
        stack = Stack(tmp_path_factory.mktemp("compose"), env)
        started = time.monotonic()
        try:
            # Waits for each dependency's health check before starting what depends on it.
            stack.compose("up", "--detach", "--no-build", timeout=600)
            # The worker's health check is its imports: it creates its pool (`--pool docker`) a little later.
            poll(docker_pool_exists, 180, "the worker created the `docker` pool")
            print(f"compose up, worker polling: {time.monotonic() - started:.0f} s")
            yield stack
        except BaseException:
            print(stack.compose("logs", "--no-color", "--tail=60"))
            raise
        finally:
            compose_v1(
                stack.env_file,
                stack.body,
                "down",
                "--volumes",
                "--remove-orphans",
                "--timeout",
                "20",
                tmp=stack.tmp,
                project=TEST_PROJECT,
                timeout=180,
            )

    def test_prefect_server_answers_on_loopback_and_stores_in_postgres(self, stack: Stack):
        assert http("GET", "http://127.0.0.1:4200/api/health") == (200, "true")
        tables = stack.psql(
            "prefect-db",
            "prefect",
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'flow_run'",
        )
        assert tables == "1"

    def test_worker_is_registered_with_the_docker_pool(self, stack: Stack):
        pool = http("GET", "http://127.0.0.1:4200/api/work_pools/docker")
        assert pool is not None and pool[0] == 200 and json.loads(pool[1])["type"] == "docker", pool
        # The worker created it from the repository's template (--base-job-template), not the plugin's.
        template = json.loads((REPO / "deployments" / "work-pools" / "docker.json").read_text())
        assert json.loads(pool[1])["base_job_template"]["variables"] == template["variables"]

        def online_workers():
            answer = http("POST", "http://127.0.0.1:4200/api/work_pools/docker/workers/filter", {})
            workers = json.loads(answer[1]) if answer and answer[0] == 200 else []
            return [w for w in workers if w.get("status") == "ONLINE"]

        assert poll(online_workers, 120, "a worker turned ONLINE in the docker pool")

    def test_worker_reaches_the_engine_through_the_socket(self, stack: Stack):
        code = "import docker; print(docker.from_env().version()['ApiVersion'])"
        assert re.fullmatch(
            r"1\.\d+", stack.compose("exec", "-T", "prefect-worker", "python", "-c", code).strip()
        )

    def test_a_flow_run_of_the_docker_pool_runs_in_a_container_beside_the_stack(self, stack: Stack):
        """A deployment on the `docker` pool: the worker starts a conveyor-flows container for the run.

        The flow's code is written by a pull step (nothing of the repository's flows is needed); the run
        joins the stack's network by name and writes into the state volume the API reads.
        """
        api, token = "http://127.0.0.1:4200/api", secrets.token_hex(8)
        encoded = base64.b64encode(CHECK_FLOW.encode()).decode()
        write_flow = (
            f"python -c \"import base64; open('check.py', 'wb').write(base64.b64decode('{encoded}'))\""
        )
        _, flow = http("POST", f"{api}/flows/", {"name": "compose-check"})
        deployment = {
            "name": "compose-check",
            "flow_id": json.loads(flow)["id"],
            "work_pool_name": "docker",
            "entrypoint": "check.py:check",
            "pull_steps": [
                {"prefect.deployments.steps.run_shell_script": {"script": "mkdir -p /tmp/check"}},
                {"prefect.deployments.steps.set_working_directory": {"directory": "/tmp/check"}},
                {"prefect.deployments.steps.run_shell_script": {"script": write_flow}},
            ],
        }
        status, body = http("POST", f"{api}/deployments/", deployment)
        assert status in (200, 201), body
        status, body = http(
            "POST",
            f"{api}/deployments/{json.loads(body)['id']}/create_flow_run",
            {"parameters": {"token": token}},
        )
        assert status in (200, 201), body
        run_id = json.loads(body)["id"]

        def final_state():
            answer = http("GET", f"{api}/flow_runs/{run_id}")
            state = json.loads(answer[1])["state"] if answer and answer[0] == 200 else None
            return (
                state if state and state["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None
            )

        state = poll(final_state, 180, "the flow run ended")
        if state["type"] != "COMPLETED":
            worker_log = stack.compose("logs", "--no-color", "--tail=40", "prefect-worker")
            pytest.fail(f"{state['type']}: {state['message']}\n{worker_log}")

        def greeting_logged():  # the server stores shipped logs asynchronously: they may trail the state
            answer = http("POST", f"{api}/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}})
            if not answer or answer[0] != 200:
                return False
            return f"hello from the docker pool: {token}" in [log["message"] for log in json.loads(answer[1])]

        assert poll(greeting_logged, 60, "the flow's log line in Prefect")
        assert stack.compose("exec", "-T", "api", "cat", "/var/lib/conveyor/compose-check.txt") == token

    def test_mlflow_answers_and_keeps_experiments_in_postgres(self, stack: Stack):
        assert http("GET", "http://127.0.0.1:5000/health") == (200, "OK")
        name = f"compose-check-{secrets.token_hex(4)}"
        status, body = http("POST", "http://127.0.0.1:5000/api/2.0/mlflow/experiments/create", {"name": name})
        assert status == 200, body
        experiment_id = json.loads(body)["experiment_id"]
        stored = stack.psql(
            "mlflow-db", "mlflow", f"SELECT name FROM experiments WHERE experiment_id = {int(experiment_id)}"
        )
        assert stored == name

    def test_mlflow_serves_artifacts_from_its_volume(self, stack: Stack):
        url = "http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/compose-check/hello.txt"
        request = urllib.request.Request(url, data=b"hello", method="PUT")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        stored = stack.compose(
            "exec", "-T", "mlflow", "cat", "/var/lib/conveyor/mlartifacts/compose-check/hello.txt"
        )
        assert stored == "hello"

    def test_api_is_healthy_and_ready_with_every_store(self, stack: Stack):
        # The API serves once it has loaded its models (the first start also assembles the LLM file).
        health = poll(lambda: http("GET", "http://127.0.0.1:8000/health"), 300, "the API answered /health")
        assert health == (200, json.dumps({"status": "ok"}, separators=(",", ":")))

        last: list = [None]

        def ready():
            last[0] = http("GET", "http://127.0.0.1:8000/ready")
            return last[0] if last[0] and last[0][0] == 200 else None

        try:
            _, body = poll(ready, 120, "/ready answered 200")
        except pytest.fail.Exception:
            pytest.fail(f"/ready never answered 200; last answer: {last[0]}")
        checks = json.loads(body)["checks"]
        assert set(checks) >= {"database", "tracking", "knowledge", "orchestration", "llm"}
        assert set(checks.values()) == {"ok"}, checks

    def test_the_llm_service_serves_the_model_the_api_asks_for(self, stack: Stack):
        code = "import urllib.request as u; print(u.urlopen('http://llm:8080/v1/models').read().decode())"
        models = json.loads(stack.compose("exec", "-T", "api", "python", "-c", code))
        assert [m["id"] for m in models["data"]] == [Settings().llm_model]
