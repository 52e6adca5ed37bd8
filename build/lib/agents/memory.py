"""Agent memory: agent runs and plans in a LanceDB table, recalled as examples, summarised per agent."""

from __future__ import annotations

import json
import re
import threading
import uuid
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

TABLE = "agent_memory"
DIMENSIONS = 384
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
AGENT_NAME = re.compile(r"^[a-z][a-z_-]{0,39}$")
SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("kind", pa.string()),  # "agent" (one agent call) or "plan" (a whole run-agent-task)
        pa.field("agent", pa.string()),
        pa.field("task", pa.string()),
        pa.field("plan", pa.string()),
        pa.field("ok", pa.bool_()),
        pa.field("latency_s", pa.float64()),
        pa.field("error", pa.string()),
        pa.field("output", pa.string()),
        pa.field("feedback", pa.int32()),
        pa.field("created_at", pa.string()),
        pa.field("vector", pa.list_(pa.float32(), DIMENSIONS)),
    ]
)
_write_lock = threading.Lock()


def _table():
    from conveyor.knowledge import connect

    return connect().create_table(TABLE, schema=SCHEMA, exist_ok=True)


def record(
    kind: str,
    agent: str,
    task: str,
    ok: bool,
    latency_s: float,
    error: str = "",
    output: str = "",
    plan: dict | None = None,
) -> str:
    """Store one run; returns its id (the `run_id` users give feedback on)."""
    from conveyor.embeddings import embed

    run_id = uuid.uuid4().hex
    row = {
        "id": run_id,
        "kind": kind,
        "agent": agent,
        "task": task[:4000],
        "plan": json.dumps(plan or {}),
        "ok": ok,
        "latency_s": float(latency_s),
        "error": (error or "")[:1000],
        "output": output[:4000],
        "feedback": 0,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "vector": embed([task[:2000]])[0].tolist(),
    }
    with _write_lock:
        _table().add([row])
    return run_id


def add_feedback(run_id: str, score: int) -> None:
    """Attach user feedback (-1 bad, +1 good) to a stored run."""
    if not RUN_ID.match(run_id) or score not in (-1, 1):
        raise ValueError("feedback needs a 32-hex run id and a score of -1 or 1")
    with _write_lock:
        updated = _table().update(where=f"id = '{run_id}'", values={"feedback": score})
    if getattr(updated, "rows_updated", 1) == 0:
        raise KeyError(f"no agent run {run_id}")


def similar(task: str, agent: str, k: int = 2) -> list[dict]:
    """Past successful runs of `agent` (or plans, agent="planner") on the most similar tasks."""
    from conveyor.embeddings import embed

    if not AGENT_NAME.match(agent):
        raise ValueError(f"invalid agent name {agent!r}")
    table = _table()
    if table.count_rows() == 0:
        return []
    return (
        table.search(embed([task])[0])
        .where(f"agent = '{agent}' AND ok AND feedback >= 0", prefilter=True)
        .limit(k)
        .to_list()
    )


def examples_for_prompt(agent: str, task: str, k: int = 1) -> str:
    """Similar past successes written as prompt examples ("" when there are none)."""
    past = similar(task, agent, k)
    return "".join(
        f"\n\nA past task that worked:\nTask: {p['task'][:300]}\nOutput:\n{p['output'][:800]}" for p in past
    )


def performance_report() -> list[dict]:
    """Per agent: runs, success rate, p50/p95 latency (s), average feedback and the most common errors."""
    frame = _table().to_pandas()
    report = []
    for agent, runs in frame.groupby("agent"):
        errors = runs.loc[runs["error"] != "", "error"].str.slice(0, 120).value_counts().head(3)
        report.append(
            {
                "agent": agent,
                "runs": int(len(runs)),
                "success_rate": round(float(runs["ok"].mean()), 3),
                "p50_latency_s": round(float(np.percentile(runs["latency_s"], 50)), 3),
                "p95_latency_s": round(float(np.percentile(runs["latency_s"], 95)), 3),
                "feedback": int(runs["feedback"].sum()),
                "common_errors": [{"error": e, "count": int(c)} for e, c in errors.items()],
            }
        )
    return report
