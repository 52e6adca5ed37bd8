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
FEEDBACK_TABLE = "agent_feedback"
FEEDBACK_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("run_id", pa.string()),  # the rated run in TABLE
        pa.field("kind", pa.string()),  # the run's kind, agent and task, copied: corrections need no join
        pa.field("agent", pa.string()),
        pa.field("task", pa.string()),
        pa.field("rating", pa.int32()),  # -1 bad, +1 good
        pa.field("correction", pa.string()),  # the answer the user wanted ("" for none)
        pa.field("correct_agent", pa.string()),  # the agent that should have answered ("" for none)
        pa.field("created_at", pa.string()),
    ]
)
_write_lock = threading.Lock()


def _table():
    from conveyor.knowledge import connect

    return connect().create_table(TABLE, schema=SCHEMA, exist_ok=True)


def _feedback_table():
    from conveyor.knowledge import connect

    return connect().create_table(FEEDBACK_TABLE, schema=FEEDBACK_SCHEMA, exist_ok=True)


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


def add_feedback(run_id: str, score: int, correction: str | None = None, agent: str | None = None) -> dict:
    """Attach user feedback to a stored run: a score (-1 bad, +1 good), optionally the answer the user
    wanted (`correction`) and, for one agent's run, the agent that should have taken it (`agent`; the
    router's training set gains it, see `routing_corrections`). The run keeps the latest score; every
    feedback is kept in FEEDBACK_TABLE.

    Returns:
        The stored feedback row (its `id`, the run's `agent` and `kind`, `rating`, `correction`, ...).

    Raises:
        ValueError: a malformed run id or score, an unknown agent, or an agent named for a plan's run or
            next to a good score.
        KeyError: there is no stored run `run_id`.
    """
    if not RUN_ID.match(run_id) or score not in (-1, 1):
        raise ValueError("feedback needs a 32-hex run id and a score of -1 or 1")
    found = _table().search().where(f"id = '{run_id}'").select(["kind", "agent", "task"]).limit(1).to_list()
    if not found:
        raise KeyError(f"no agent run {run_id}")
    run = found[0]
    if agent is not None:
        _check_rerouting(run, score, agent)
    row = {
        "id": uuid.uuid4().hex,
        "run_id": run_id,
        "kind": run["kind"],
        "agent": run["agent"],
        "task": run["task"],
        "rating": score,
        "correction": (correction or "")[:4000],
        "correct_agent": agent or "",
        "created_at": datetime.now(UTC).isoformat(),
    }
    with _write_lock:
        _table().update(where=f"id = '{run_id}'", values={"feedback": score})
        _feedback_table().add([row])
    return row


def _check_rerouting(run: dict, score: int, agent: str) -> None:
    from agents.catalog import AGENTS

    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r} (known: {', '.join(AGENTS)})")
    if run["kind"] != "agent":
        raise ValueError(f"this run is a {run['kind']}, not one agent's answer: no agent to correct")
    if score == 1 and agent != run["agent"]:
        raise ValueError(f"a rating of 1 says {run['agent']} answered well; naming {agent} needs -1")


def routing_corrections() -> list[dict]:
    """Every routing correction, oldest first: `message` (the run's task), `agent` (the one the user
    named), `created_at`. `train-router` adds them to its training set (the latest per message wins)."""
    rows = (
        _feedback_table()
        .search()
        .where("correct_agent != ''")
        .select(["task", "correct_agent", "created_at"])
        .limit(None)
        .to_list()
    )
    return [
        {"message": r["task"], "agent": r["correct_agent"], "created_at": r["created_at"]}
        for r in sorted(rows, key=lambda r: r["created_at"])
    ]


def feedback_for(run_id: str) -> list[dict]:
    """Every feedback given on run `run_id`, oldest first."""
    if not RUN_ID.match(run_id):
        raise ValueError("a run id is 32 hex characters")
    rows = _feedback_table().search().where(f"run_id = '{run_id}'").limit(None).to_list()
    return sorted(rows, key=lambda r: r["created_at"])


def similar(task: str, agent: str, k: int = 2, min_similarity: float = -1.0) -> list[dict]:
    """Past successful runs of `agent` (or plans, agent="planner") on the most similar tasks, each with its
    `similarity` (cosine of the task embeddings); runs less similar than `min_similarity` are left out."""
    from conveyor.embeddings import embed

    if not AGENT_NAME.match(agent):
        raise ValueError(f"invalid agent name {agent!r}")
    table = _table()
    if table.count_rows() == 0:
        return []
    rows = (
        table.search(embed([task])[0])
        .distance_type("cosine")
        .where(f"agent = '{agent}' AND ok AND feedback >= 0", prefilter=True)
        .limit(k)
        .to_list()
    )
    rows = [row | {"similarity": 1.0 - row["_distance"]} for row in rows]
    return [row for row in rows if row["similarity"] >= min_similarity]


def examples_for_prompt(agent: str, task: str, k: int = 1) -> str:
    """Similar past successes written as prompt examples ("" when there are none)."""
    past = similar(task, agent, k)
    return "".join(
        f"\n\nA past task that worked:\nTask: {p['task'][:300]}\nOutput:\n{p['output'][:800]}" for p in past
    )


def performance_report() -> list[dict]:
    """Per agent: runs, success rate, p50/p95 latency (s), rated runs (their latest rating: count,
    positive, negative, average), feedback with a correction or another agent, and the common errors."""
    frame = _table().to_pandas()
    feedback = _feedback_table().to_pandas()
    corrected = feedback[(feedback["correction"] != "") | (feedback["correct_agent"] != "")]
    corrections = corrected.groupby("agent").size()
    report = []
    for agent, runs in frame.groupby("agent"):
        errors = runs.loc[runs["error"] != "", "error"].str.slice(0, 120).value_counts().head(3)
        ratings = runs.loc[runs["feedback"] != 0, "feedback"]
        report.append(
            {
                "agent": agent,
                "runs": int(len(runs)),
                "success_rate": round(float(runs["ok"].mean()), 3),
                "p50_latency_s": round(float(np.percentile(runs["latency_s"], 50)), 3),
                "p95_latency_s": round(float(np.percentile(runs["latency_s"], 95)), 3),
                "rated": int(len(ratings)),
                "rated_good": int((ratings > 0).sum()),
                "rated_bad": int((ratings < 0).sum()),
                "average_rating": round(float(ratings.mean()), 3) if len(ratings) else None,
                "corrections": int(corrections.get(agent, 0)),
                "common_errors": [{"error": e, "count": int(c)} for e, c in errors.items()],
            }
        )
    return report
