"""Limits shared by API replicas: `limits` counting in SQL; pairs of uvicorn processes, each pair on one
database (request limit, sign-in limits and lockout, 64 clients under load); a `/ready` asking the LLM for its
models only."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import chain, pairwise
from pathlib import Path

import httpx
import pytest
from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter
from prefect.settings import PREFECT_API_URL

from conveyor.settings import DEVELOPMENT_ADMIN_PASSWORD, Settings
from flows.index_documents import index_documents
from serving import crud
from serving.core.ratelimit import ApiLimits, SQLStorage
from serving.db import make_engine, make_sessionmaker
from serving.testing import REPO, ProcessServer, free_port, login, poll

ADMIN = ("admin", DEVELOPMENT_ADMIN_PASSWORD)
DOMAIN = "limits-load"
TOPICS = ["pandas group by", "Prefect work pools", "CSV files", "tumour data", "retries", "histograms"]
LOAD_CLIENTS = 64
LOAD_SECONDS = 60
CLIENT_TIMEOUT_S = 60.0
READY_CACHE_S = 3.0  # the `limited` replicas' /ready cache

# A process hitting one shared counter: says "ready" once connected, waits for a line on stdin so that all
# start together, prints the number of hits the limit allowed.
HITTER = """
import sys
from limits import RateLimitItemPerMinute
from limits.strategies import FixedWindowRateLimiter
from serving.core.ratelimit import SQLStorage
from serving.db import make_engine

url, limit, hits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
storage = SQLStorage(make_engine(url))
assert storage.check()
print("ready", flush=True)
limiter = FixedWindowRateLimiter(storage)
item = RateLimitItemPerMinute(limit)
sys.stdin.readline()
print(sum(limiter.hit(item, "shared") for _ in range(hits)))
"""


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A PostgreSQL cluster on a free local port (as the `postgres` user when run as root); its URL."""
    initdb = shutil.which("initdb")
    if initdb is None:
        pytest.skip("PostgreSQL (initdb) is not installed")
    bindir = Path(initdb).resolve().parent
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
    if as_owner:
        shutil.chown(folder, "postgres")
    data, port = folder / "data", free_port()
    run = partial(subprocess.run, check=True, capture_output=True, timeout=120)
    try:
        run([*as_owner, bindir / "initdb", "-D", data, "-A", "trust", "-U", "conveyor"])
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
        run([*as_owner, bindir / "pg_ctl", "-D", data, "-o", options, "-l", folder / "log", "-w", "start"])
        yield f"postgresql+psycopg2://conveyor@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_owner, bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        with throwaway_postgres() as url:
            yield url


@pytest.fixture
def limiter(tmp_path) -> FixedWindowRateLimiter:
    return FixedWindowRateLimiter(SQLStorage(make_engine(f"sqlite:///{tmp_path / 'limits.db'}")))


class TestLimiterOnSQL:
    def test_a_window_allows_the_limit_then_starts_again(self, limiter):
        item = RateLimitItemPerSecond(3, 2)
        assert [limiter.hit(item, "ada") for _ in range(5)] == [True, True, True, False, False]
        stats = limiter.get_window_stats(item, "ada")
        assert stats.remaining == 0 and 0 < stats.reset_time - time.time() <= 2
        time.sleep(stats.reset_time - time.time() + 0.05)
        assert limiter.get_window_stats(item, "ada").remaining == 3
        assert [limiter.hit(item, "ada") for _ in range(4)] == [True, True, True, False]

    def test_keys_and_limits_count_separately(self, limiter):
        per_minute, per_hour = RateLimitItemPerMinute(2), RateLimitItemPerMinute(2, 60)
        assert [limiter.hit(per_minute, "ada") for _ in range(3)] == [True, True, False]
        assert limiter.hit(per_minute, "grace") and limiter.hit(per_minute, "ada-login")
        assert limiter.hit(per_hour, "ada")  # another limit on the same identifier
        limiter.clear(per_minute, "ada")
        assert limiter.hit(per_minute, "ada") and not limiter.test(per_minute, "grace", cost=2)

    def test_processes_sharing_the_database_count_exactly(self, database_url):
        url, limit, processes, hits = database_url, 150, 4, 60
        make_engine(url).dispose()  # the table exists before the processes race
        children = [
            subprocess.Popen(
                [sys.executable, "-c", HITTER, url, str(limit), str(hits)],
                cwd=REPO,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(processes)
        ]
        for child in children:
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        allowed = [int(child.communicate(timeout=120)[0]) for child in children]
        assert sum(allowed) == limit  # 240 hits raced for 150 places: not one more, not one less
        storage = SQLStorage(make_engine(url))
        assert storage.get(RateLimitItemPerMinute(limit).key_for("shared")) == processes * hits

    @pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
    def test_a_redis_url_counts_in_redis(self, tmp_path):
        port = free_port()
        server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--dir", str(tmp_path)])
        try:
            storage = storage_from_string(f"redis://127.0.0.1:{port}")
            for _ in range(50):
                if storage.check():
                    break
                time.sleep(0.1)
            limiter = FixedWindowRateLimiter(storage)
            item = RateLimitItemPerMinute(2)
            assert [limiter.hit(item, "ada") for _ in range(3)] == [True, True, False]
        finally:
            server.terminate()
            server.wait(timeout=10)


class TestApiLimits:
    @pytest.fixture
    def limits(self, tmp_path, settings) -> ApiLimits:
        storage = SQLStorage(make_engine(f"sqlite:///{tmp_path / 'limits.db'}"))
        return ApiLimits(storage, settings.model_copy(update={"api_login_attempts_per_minute": 1000}))

    def test_failures_lock_the_account_and_a_right_password_resets_them(self, limits):
        for _ in range(2):  # 19 failures, then the right password: the count starts again
            for _ in range(19):
                assert limits.start_login("ada", "10.0.0.1") is None
                limits.login_failed("ada")
            assert limits.start_login("ada", "10.0.0.1") is None
            limits.login_succeeded("ada")
        for _ in range(20):
            assert limits.start_login("ada", "10.0.0.2") is None
            limits.login_failed("ada")
        refusal = limits.start_login("ada", "10.0.0.3")
        assert refusal is not None and refusal.reason.startswith("account locked after 20 failed sign-ins")
        assert 14 * 60 < refusal.retry_after_s <= 15 * 60
        assert limits.start_login("grace", "10.0.0.3") is None  # other accounts sign in

    def test_parallel_guesses_cannot_pass_the_failure_limit(self, limits):
        def guess(i: int) -> bool:
            admitted = limits.start_login("ada", f"10.0.1.{i}") is None
            if admitted:
                limits.login_failed("ada")
            return admitted

        with ThreadPoolExecutor(16) as pool:
            admitted = list(pool.map(guess, range(64)))
        assert admitted.count(True) == 20  # checked passwords: exactly the limit, whatever the interleaving
        assert limits.start_login("ada", "10.0.2.1") is not None


class FakeLLMEndpoint:
    """An OpenAI-compatible endpoint on 127.0.0.1 that counts calls; `healthy` False makes it answer 503."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.called_at: list[float] = []  # time.monotonic() of each call
        self.healthy = True
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                endpoint.calls.append(f"{self.command} {self.path}")
                endpoint.called_at.append(time.monotonic())
                ok = endpoint.healthy and self.path == "/v1/models"
                body = json.dumps(
                    {"object": "list", "data": [{"id": "fake", "object": "model"}]} if ok else {}
                )
                self.send_response(200 if ok else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            do_GET = do_POST = _answer

            def log_message(self, *_) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}/v1"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def llm_endpoint() -> Iterator[FakeLLMEndpoint]:
    endpoint = FakeLLMEndpoint()
    yield endpoint
    endpoint.close()


@dataclass
class Replicas:
    urls: list[str]
    admin: dict[str, str]  # the development admin's headers, signed in once from 127.0.0.1


def replica_servers(folder: Path, llm_url: str, **env: str) -> list[ProcessServer]:
    """Two API processes (not started) on one SQLite database, the model behind `llm_url`.

    Its tables and first admin are made here: replicas starting together would race to make them."""
    database = f"sqlite:///{folder / 'users.db'}"
    engine = make_engine(database)
    with make_sessionmaker(engine)() as session:
        crud.ensure_first_admin(session, *ADMIN)
    engine.dispose()
    shared = {
        "CONVEYOR_DATABASE_URL": database,
        "CONVEYOR_LLM_BACKEND": "openai",
        "CONVEYOR_LLM_BASE_URL": llm_url,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        **env,
    }
    return [ProcessServer(shared, folder / f"api-{i}.log", startup_timeout_s=300) for i in range(2)]


@pytest.fixture(scope="module")
def replica_pairs(tmp_path_factory, llm_endpoint) -> Iterator[dict[str, Replicas]]:
    """Two pairs of replicas, all four processes started together (their startups overlap).

    `limited`: 40 requests per user and 8 sign-in attempts per address a minute, /ready caching the model's
    answer for READY_CACHE_S. `defaults`: the default sign-in limits, and a request limit that the load never
    reaches (counted in the database all the same)."""
    settings = {
        "limited": {
            "CONVEYOR_API_RATE_LIMIT_PER_MINUTE": "40",
            "CONVEYOR_API_LOGIN_ATTEMPTS_PER_MINUTE": "8",
            "CONVEYOR_API_READY_CACHE_S": str(READY_CACHE_S),
        },
        "defaults": {"CONVEYOR_API_RATE_LIMIT_PER_MINUTE": "1000000"},
    }
    pairs = {
        name: replica_servers(tmp_path_factory.mktemp(name), llm_endpoint.url, **env)
        for name, env in settings.items()
    }
    with ExitStack() as stack:
        for server in chain(*pairs.values()):
            stack.push(server.start())
        for server in chain(*pairs.values()):
            server.wait_until_up()
        yield {
            name: Replicas([server.url for server in pair], login(pair[0].url, *ADMIN))
            for name, pair in pairs.items()
        }


@pytest.fixture(scope="module")
def limited(replica_pairs) -> Replicas:
    return replica_pairs["limited"]


@pytest.fixture(scope="module")
def defaults(replica_pairs) -> Replicas:
    return replica_pairs["defaults"]


def client_from(address: str) -> httpx.Client:
    """A client whose requests come from `address` (any 127.x.y.z reaches the servers on 127.0.0.1)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def sign_in(client: httpx.Client, url: str, username: str, password: str) -> httpx.Response:
    return client.post(f"{url}/auth/token", data={"username": username, "password": password})


class TestReplicasShareLimits:
    def test_a_user_over_the_limit_gets_429_from_every_replica(self, limited):
        def me(i: int) -> httpx.Response:
            return httpx.get(f"{limited.urls[i % 2]}/users/me", headers=limited.admin, timeout=30)

        with ThreadPoolExecutor(16) as pool:
            statuses = [r.status_code for r in pool.map(me, range(100))]
        assert statuses.count(200) == 40 and statuses.count(429) == 60  # exact across both processes
        for url in limited.urls:
            refused = httpx.get(f"{url}/users/me", headers=limited.admin)
            assert refused.status_code == 429
            assert refused.json()["detail"] == "rate limit of 40 requests per minute reached"
            assert 1 <= int(refused.headers["retry-after"]) <= 60

    def test_sign_in_attempts_per_address_are_limited_across_replicas(self, limited):
        with client_from("127.0.0.2") as busy, client_from("127.0.0.3") as other:
            guesses = [sign_in(busy, limited.urls[i % 2], f"guess{i}", "x" * 8) for i in range(8)]
            refused = sign_in(busy, limited.urls[1], "admin", DEVELOPMENT_ADMIN_PASSWORD)
            elsewhere = sign_in(other, limited.urls[0], "admin", DEVELOPMENT_ADMIN_PASSWORD)
        assert [g.status_code for g in guesses] == [401] * 8
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.json()["detail"] == "too many sign-in attempts from this address (limit 8 per minute)"
        assert elsewhere.status_code == 200  # the limit is the address's

    def test_ready_asks_the_model_only_for_its_model_list_and_caches_it(self, limited, llm_endpoint):
        url = limited.urls[0]  # no probe of this replica before

        def probe() -> httpx.Response:
            return httpx.get(f"{url}/ready", timeout=60)

        llm_endpoint.calls.clear()
        llm_endpoint.called_at.clear()
        with ThreadPoolExecutor(8) as pool:
            probes = list(pool.map(lambda _: probe(), range(8)))
        assert {p.json()["checks"]["llm"] for p in probes} == {"ok"}
        assert {p.json()["checks"]["rate_limits"] for p in probes} == {"ok"}
        assert llm_endpoint.calls == ["GET /v1/models"]  # one cheap call for 8 probes, no completion

        # Once the answer expires a probe asks again; right after that the answer is reused while the model
        # is down, until it expires and the failure shows.
        poll(lambda: probe().is_success and len(llm_endpoint.calls) == 2, 60, "a second model call", 0.2)
        answers: list[httpx.Response] = []

        def failing() -> bool:
            answers.append(probe())
            return answers[-1].status_code == 503

        llm_endpoint.healthy = False
        try:
            poll(failing, 60, "/ready failing", every_s=0.2)
        finally:
            llm_endpoint.healthy = True
        *cached, down = answers
        assert cached and {a.json()["checks"]["llm"] for a in cached} == {"ok"}
        assert (
            down.json()["checks"]["llm"] == f"error: LLM endpoint {llm_endpoint.url}/models answered HTTP 503"
        )
        assert llm_endpoint.calls == ["GET /v1/models"] * 3
        assert all(later - earlier >= READY_CACHE_S for earlier, later in pairwise(llm_endpoint.called_at))


class TestLoginLockout:
    def test_twenty_wrong_passwords_lock_the_account_on_every_replica(self, defaults):
        assert Settings().api_login_max_failures == 20  # the default sign-in limits under test
        for name in ("victim", "bystander"):
            body = {"username": name, "password": f"{name}-pass1"}
            assert (
                httpx.post(f"{defaults.urls[0]}/users", headers=defaults.admin, json=body).status_code == 201
            )

        # From two addresses (each under its own attempt limit), on both replicas.
        with client_from("127.0.0.2") as one, client_from("127.0.0.3") as two:
            wrong = [
                sign_in((one, two)[i % 2], defaults.urls[i // 2 % 2], "victim", f"guess-{i}").status_code
                for i in range(20)
            ]
        assert wrong == [401] * 20

        with client_from("127.0.0.4") as owner:
            locked = [sign_in(owner, url, "victim", "victim-pass1") for url in defaults.urls]
            bystander = sign_in(owner, defaults.urls[1], "bystander", "bystander-pass1")
        for response in locked:  # the right password is refused meanwhile, on either replica
            assert response.status_code == 429 and "access_token" not in response.text
            assert response.json()["detail"].startswith("account locked after 20 failed sign-ins")
            assert 14 * 60 <= int(response.headers["retry-after"]) <= 15 * 60
        # The lock is the account's: another account signs in from the same address; tokens keep working.
        assert bystander.status_code == 200
        assert httpx.get(f"{defaults.urls[1]}/users/me", headers=defaults.admin).status_code == 200


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class TestLoad:
    def test_64_clients_for_a_minute_on_two_replicas(self, defaults, llm_endpoint, output_dir):
        documents = [
            {"id": f"note-{i}", "title": topic, "text": f"Note {i} about {topic}: " + " ".join(TOPICS) * 3}
            for i, topic in enumerate(TOPICS * 5)
        ]
        index_documents(domain=DOMAIN, documents=documents)
        urls = defaults.urls
        latencies: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()
        end = time.monotonic() + LOAD_SECONDS

        def client(n: int) -> None:
            with httpx.Client(timeout=CLIENT_TIMEOUT_S, headers=defaults.admin) as http:
                i = n
                while time.monotonic() < end:
                    body = {"query": TOPICS[i % len(TOPICS)], "domains": [DOMAIN], "k": 5}
                    started = time.perf_counter()
                    try:
                        response = http.post(f"{urls[i % 2]}/rag/query", json=body)
                        failure = None if response.status_code == 200 else f"HTTP {response.status_code}"
                    except httpx.TimeoutException:
                        failure = "hang"
                    except httpx.HTTPError as exc:
                        failure = type(exc).__name__
                    with lock:
                        (
                            failures.append(failure)
                            if failure
                            else latencies.append(time.perf_counter() - started)
                        )
                    i += LOAD_CLIENTS

        started = time.monotonic()
        with ThreadPoolExecutor(LOAD_CLIENTS) as pool:
            list(pool.map(client, range(LOAD_CLIENTS)))
        wall = time.monotonic() - started
        figures = {
            "clients": LOAD_CLIENTS,
            "replicas": 2,
            "seconds": round(wall, 1),
            "ok": len(latencies),
            "errors": len([f for f in failures if f != "hang"]),
            "hangs": failures.count("hang"),
            "p50_ms": round(1000 * _percentile(latencies, 0.5)),
            "p95_ms": round(1000 * _percentile(latencies, 0.95)),
        }
        (output_dir / "rate_limits_load.json").write_text(json.dumps(figures, indent=2))
        print(f"\n/rag/query, 2 replicas on one database: {figures}")
        assert failures == [], figures
        assert len(latencies) >= LOAD_CLIENTS
