"""Chat API under load: /rag/query and /chat with concurrent clients, streaming latency, /health while busy,
and /rag/query from 1, 16 and 64 clients spread over two API processes that share one database (and so the
per-user request counts).

`python -m bench.bench_api [--clients 16] [--queries 320] [--chats 8] [--streams 3] [--per-client 20]`
starts the API as a uvicorn process on a free port (fresh user database, development admin), later a second
one on the same database, and prints one figure per line.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from conveyor.settings import DEVELOPMENT_ADMIN_PASSWORD, get_settings
from serving.testing import ProcessServer, login, sse_events

DOMAIN = "bench-api"
QUERIES = [
    "how do I group rows and sum a column in pandas",
    "what is a Prefect work pool",
    "read a CSV file into a data frame",
    "which dataset has tumour measurements",
    "how are flow runs retried",
    "plot a histogram with matplotlib",
    "what does the gateway return for a query",
    "train a classifier with scikit-learn",
]
REPLICA_CLIENTS = (1, 16, 64)
CHAT = "Summarize in one sentence: sales grew 12 percent in the north while costs stayed flat."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, latencies: list[float], errors: int, wall_s: float) -> None:
    done = len(latencies)
    print(
        f"{name}: {done} ok, {errors} errors, {done / wall_s:.1f} req/s, "
        f"p50 {1000 * percentile(latencies, 0.5):.0f} ms, p95 {1000 * percentile(latencies, 0.95):.0f} ms"
        if latencies
        else f"{name}: 0 ok, {errors} errors",
        flush=True,
    )


def load(name: str, clients: int, requests: int, send: Callable[[httpx.Client, int], httpx.Response]) -> None:
    """`requests` calls of `send` from `clients` concurrent HTTP clients; a non-2xx answer is an error."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def worker(offset: int) -> None:
        nonlocal errors
        with httpx.Client(timeout=600) as client:
            for i in range(offset, requests, clients):
                started = time.perf_counter()
                try:
                    ok = send(client, i).is_success
                except httpx.HTTPError:
                    ok = False
                with lock:
                    if ok:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    report(f"{name} ({clients} clients)", latencies, errors, time.perf_counter() - started)


def ensure_domain(url: str, auth: dict[str, str]) -> None:
    """Index the repo's knowledge documents into the bench domain through the API (once)."""
    if DOMAIN in httpx.get(f"{url}/rag/domains", headers=auth, timeout=60).json():
        return
    folder = get_settings().data_dir / "knowledge"
    documents = [
        {"id": str(p.relative_to(folder)), "text": p.read_text(errors="replace")[:20_000], "metadata": {}}
        for p in sorted(folder.rglob("*.md"))[:300]
        if p.read_text(errors="replace").strip()
    ]
    if not documents:
        raise SystemExit(f"no documents under {folder}: run `python -m data.prepare` first")
    # The first Prefect call may start a local Prefect server (no PREFECT_API_URL): allow for it.
    body = {"domain": DOMAIN, "documents": documents}
    started = httpx.post(f"{url}/rag/documents", headers=auth, json=body, timeout=300)
    started.raise_for_status()
    run_id = started.json()["run_id"]
    while (run := httpx.get(f"{url}/runs/{run_id}", headers=auth, timeout=60).json())["state"] not in {
        "COMPLETED",
        "FAILED",
        "CRASHED",
    }:
        time.sleep(2)
    print(f"indexed {len(documents)} documents into {DOMAIN}: {run['state']}", flush=True)


def stream_figures(url: str, auth: dict[str, str], streams: int) -> None:
    """Time to first token and tokens/s of /chat/stream, one answer at a time."""
    first_token, rates = [], []
    for _ in range(streams):
        started = time.perf_counter()
        first = None
        tokens = 0
        with httpx.stream(
            "POST", f"{url}/chat/stream", headers=auth, json={"message": CHAT}, timeout=600
        ) as response:
            for kind, _ in sse_events(response.iter_lines()):
                if kind == "token":
                    tokens += 1
                    first = first or time.perf_counter()
        end = time.perf_counter()
        if first is not None:
            first_token.append(first - started)
            if tokens > 1:
                rates.append((tokens - 1) / (end - first))
    print(
        f"/chat/stream: time to first token median {statistics.median(first_token):.2f} s, "
        f"{statistics.median(rates):.1f} tokens/s (median of {len(rates)} answers)",
        flush=True,
    )


def health_while_busy(url: str, auth: dict[str, str], model: str) -> None:
    """/health latency while the model generates a long answer (polled until the answer is done)."""
    prompt = "Write the numbers from 1 to 300 in words, separated by commas."
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 400}
    busy = threading.Thread(
        target=lambda: httpx.post(f"{url}/v1/chat/completions", headers=auth, json=body, timeout=600)
    )
    busy.start()
    latencies = []
    with httpx.Client() as client:
        while busy.is_alive():
            started = time.perf_counter()
            client.get(f"{url}/health").raise_for_status()
            latencies.append(time.perf_counter() - started)
            time.sleep(0.05)
    busy.join()
    print(
        f"/health while the LLM generates: {len(latencies)} calls, "
        f"p50 {1000 * percentile(latencies, 0.5):.1f} ms, p95 {1000 * percentile(latencies, 0.95):.1f} ms, "
        f"max {1000 * max(latencies):.1f} ms",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--queries", type=int, default=320)
    parser.add_argument("--chats", type=int, default=8)
    parser.add_argument("--streams", type=int, default=3)
    parser.add_argument("--per-client", type=int, default=20, help="queries per client on two replicas")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="bench-api-"))
    env = {
        "CONVEYOR_DATABASE_URL": f"sqlite:///{scratch / 'users.db'}",
        "CONVEYOR_API_RATE_LIMIT_PER_MINUTE": "1000000",
        "CONVEYOR_ENVIRONMENT": "development",
    }
    with ProcessServer(env, scratch / "api.log", startup_timeout_s=300) as server:
        auth = login(server.url, "admin", DEVELOPMENT_ADMIN_PASSWORD)
        ensure_domain(server.url, auth)

        def query(client: httpx.Client, i: int, urls: tuple[str, ...] = (server.url,)) -> httpx.Response:
            body = {"query": QUERIES[i % len(QUERIES)], "domains": [DOMAIN], "k": 10}
            return client.post(f"{urls[i % len(urls)]}/rag/query", headers=auth, json=body)

        def chat(client: httpx.Client, i: int) -> httpx.Response:
            return client.post(f"{server.url}/chat", headers=auth, json={"message": CHAT})

        load("warm-up /rag/query", 1, 8, query)
        load("/rag/query", 1, 40, query)
        load("/rag/query", args.clients, args.queries, query)
        load("/chat", args.clients, args.chats, chat)
        stream_figures(server.url, auth, args.streams)
        health_while_busy(server.url, auth, get_settings().llm_model)

        with ProcessServer(env, scratch / "api-2.log", startup_timeout_s=300) as second:
            urls = (server.url, second.url)
            load("warm-up /rag/query, 2nd replica", 1, 8, lambda client, i: query(client, i, (second.url,)))
            for clients in REPLICA_CLIENTS:
                load(
                    "/rag/query, 2 replicas on one database",
                    clients,
                    clients * args.per_client,
                    lambda client, i: query(client, i, urls),
                )


if __name__ == "__main__":
    main()
