"""Two workers index one domain at once: real processes, a real Prefect server, one shared LanceDB.

Each worker process has its own state folder (so its file lock, like a second machine's, cannot see the
other's) and the same `CONVEYOR_LANCEDB_URI`; only the domain's Prefect global concurrency limit can keep
their writes apart. The server is a `prefect server start` of its own (the session's test server runs no
services, so it would never revoke a lease) with the repossessor looking for expired leases every second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import lancedb
import pytest

from serving.testing import free_port, poll
from tasks.indexing import domain_limit

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
LEASE_S = 60  # the shortest lease Prefect's server grants
# A worker: import everything, say so, wait for the go file, run the flow, print its flow run id and report.
WORKER = """
import json, sys, time
from pathlib import Path

from flows.index_documents import index_documents

domain, source, barrier, name = sys.argv[1:]
Path(barrier, "ready-" + name).touch()
while not Path(barrier, "go").exists():
    time.sleep(0.02)
state = index_documents(domain=domain, source=source, return_state=True)
report = state.result()
print("RESULT " + json.dumps({"flow_run_id": str(state.state_details.flow_run_id), **report.model_dump()}))
"""


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> str:
    """A Prefect server with its own SQLite database; its API URL."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    quiet = ["SCHEDULER", "LATE_RUNS", "FOREMAN", "CANCELLATION_CLEANUP", "PAUSE_EXPIRATIONS", "TRIGGERS"]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "1",
        **{f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in quiet},
    }
    command = [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1"]
    log = (home / "server.log").open("w")
    server = subprocess.Popen([*command, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            assert server.poll() is None, (home / "server.log").read_text()[-3000:]
            return False

    try:
        poll(healthy, 120, "the Prefect server answered /health")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


@pytest.fixture
def shared_store(tmp_path: Path) -> Path:
    return tmp_path / "shared-lancedb"


def make_source(folder: Path, documents: int) -> Path:
    folder.mkdir(parents=True)
    for n in range(documents):
        paragraphs = [
            f"Document {n} paragraph {p}: the pipeline stage {n * 7 + p} moves batch {p} of run {n} "
            f"through queue {n % 5}, and its worker {p % 3} records the checksum {n * 31 + p}."
            for p in range(6)
        ]
        (folder / f"doc-{n:03d}.md").write_text(f"# Note {n}\n\n" + "\n\n".join(paragraphs))
    return folder


class Worker:
    """One worker process with a state folder of its own, against the given Prefect server and LanceDB."""

    def __init__(self, name: str, root: Path, api_url: str, store: Path, domain: str, source: Path):
        self.name, self.barrier = name, root / "barrier"
        self.barrier.mkdir(exist_ok=True)
        home = root / f"worker-{name}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CONVEYOR_"))}
        env |= {
            "CONVEYOR_HOME": str(home),
            "PREFECT_HOME": str(home / "prefect"),
            "PREFECT_API_URL": api_url,
            "CONVEYOR_LANCEDB_URI": str(store),
            "CONVEYOR_INDEX_LOCK_LEASE_S": str(LEASE_S),
            "CONVEYOR_EMBEDDING_TASK_CHUNKS": "64",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, domain, str(source), str(self.barrier), name],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def ready(self) -> bool:
        assert self.process.poll() is None, self.process.stdout.read()
        return (self.barrier / f"ready-{self.name}").exists()

    def result(self, timeout: float = 600) -> dict:
        output, _ = self.process.communicate(timeout=timeout)
        lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
        assert self.process.returncode == 0 and lines, output[-4000:]
        return json.loads(lines[-1].removeprefix("RESULT "))

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=30)


def go(*workers: Worker) -> None:
    poll(lambda: all(w.ready() for w in workers), 300, "every worker imported the flow", every_s=0.2)
    (workers[0].barrier / "go").touch()


def limit(api_url: str, domain: str) -> dict | None:
    response = httpx.get(f"{api_url}/v2/concurrency_limits/{domain_limit(domain)}", timeout=10)
    return response.json() if response.status_code == 200 else None


def held_window(api_url: str, flow_run_id: str) -> tuple[datetime, datetime]:
    """From the first task run's start to the last one's end: the flow's tasks all run inside the slot."""
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}}

    def recorded() -> list[dict] | None:  # the server records task states from events, a moment later
        runs = httpx.post(f"{api_url}/task_runs/filter", json=body, timeout=10).json()
        names = {r["name"].rsplit("-", 1)[0] for r in runs}
        done = names >= {"stage_source", "commit_changes", "clear_staging"} and all(
            r["end_time"] for r in runs
        )
        return runs if done else None

    runs = poll(recorded, 60, f"the task runs of flow run {flow_run_id}", every_s=0.5)
    starts = [datetime.fromisoformat(r["start_time"]) for r in runs]
    ends = [datetime.fromisoformat(r["end_time"]) for r in runs]
    return min(starts), max(ends)


def stored(store: Path, domain: str) -> tuple[list[str], set[str]]:
    table = lancedb.connect(str(store)).open_table(f"domain_{domain}")
    rows = table.to_lance().to_table(columns=["chunk_id", "doc_id"]).to_pylist()
    return [r["chunk_id"] for r in rows], {r["doc_id"] for r in rows}


def test_two_workers_on_one_domain_serialise_through_the_prefect_limit(
    prefect_server: str, shared_store: Path, tmp_path: Path
):
    source = make_source(tmp_path / "source", 40)
    workers = [Worker(n, tmp_path, prefect_server, shared_store, "shared", source) for n in ("a", "b")]
    go(*workers)
    first, second = sorted((w.result() for w in workers), key=lambda r: r["added"], reverse=True)

    assert (first["added"], second["added"], second["unchanged"]) == (40, 0, 40)
    assert second["chunks_embedded"] == 0 and second["table_version"] == first["table_version"]
    windows = sorted(held_window(prefect_server, r["flow_run_id"]) for r in (first, second))
    assert windows[0][1] <= windows[1][0], f"the two runs' tasks interleaved: {windows}"
    (start_a, end_a), (start_b, end_b) = windows
    print(
        f"tasks of run 1: {(end_a - start_a).total_seconds():.1f} s; run 2 began "
        f"{(start_b - end_a).total_seconds():.2f} s after, took {(end_b - start_b).total_seconds():.1f} s"
    )
    chunk_ids, doc_ids = stored(shared_store, "shared")
    assert len(chunk_ids) == len(set(chunk_ids)) == first["chunks_embedded"] == first["rows"]
    assert doc_ids == {f"doc-{n:03d}.md" for n in range(40)}
    state = limit(prefect_server, "shared")
    assert (state["limit"], state["active_slots"]) == (1, 0)


def test_a_killed_workers_slot_is_freed_by_its_lease_and_the_rerun_completes(
    prefect_server: str, shared_store: Path, tmp_path: Path
):
    source = make_source(tmp_path / "source", 150)
    doomed = Worker("doomed", tmp_path, prefect_server, shared_store, "leased", source)
    go(doomed)

    def holding() -> bool:
        assert doomed.process.poll() is None, "the run ended before it could be killed"
        return bool((limit(prefect_server, "leased") or {}).get("active_slots"))

    poll(holding, 300, "the doomed worker took the domain's slot", every_s=0.05)
    doomed.kill()
    killed_at = datetime.now(UTC)
    assert limit(prefect_server, "leased")["active_slots"] == 1  # a dead process does not give it back

    rerun = Worker("rerun", tmp_path, prefect_server, shared_store, "leased", source)
    go(rerun)
    report = rerun.result()
    waited = (held_window(prefect_server, report["flow_run_id"])[0] - killed_at).total_seconds()

    # The slot came back when the lease ran out (about LEASE_S after the doomed run took it), not before.
    assert waited > LEASE_S / 2, f"the rerun got the slot {waited:.0f} s after the kill: not the lease"
    print(f"lease {LEASE_S} s: the rerun got the killed worker's slot {waited:.0f} s after the kill")
    assert report["added"] + report["updated"] + report["unchanged"] == 150
    chunk_ids, doc_ids = stored(shared_store, "leased")
    assert len(chunk_ids) == len(set(chunk_ids)) == report["rows"]
    assert doc_ids == {f"doc-{n:03d}.md" for n in range(150)}
    assert limit(prefect_server, "leased")["active_slots"] == 0
