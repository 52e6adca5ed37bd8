"""Work pools from `deployments/work-pools/` and crash detection: `python -m conveyor.workpools [POOL...]`."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from conveyor.settings import ConfigurationError

TEMPLATES = Path(__file__).resolve().parent.parent / "deployments" / "work-pools"
POOL_TYPES = {"local": "process", "docker": "docker", "k8s-gpu": "kubernetes"}
CRASH_DETECTION = "conveyor-crash-silent-flow-runs"
# The pools' flow runs send a heartbeat every 30 s (PREFECT_FLOWS_HEARTBEAT_FREQUENCY in each template).
HEARTBEAT_TIMEOUT = timedelta(seconds=90)


def template(pool: str) -> dict[str, Any]:
    """The base job template of `pool` as stored in the repository."""
    if pool not in POOL_TYPES:
        raise ConfigurationError(f"unknown work pool {pool!r}; known: {', '.join(POOL_TYPES)}")
    return json.loads((TEMPLATES / f"{pool}.json").read_text())


def apply(pool: str, api_url: str | None = None) -> str:
    """Create `pool` from its template, or update its template if it exists; returns 'created'/'updated'."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    base_job_template = template(pool)
    overrides = {PREFECT_API_URL: api_url} if api_url else {}
    with temporary_settings(overrides), get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(name=pool, type=POOL_TYPES[pool], base_job_template=base_job_template)
            )
            return "created"
        client.update_work_pool(pool, WorkPoolUpdate(base_job_template=base_job_template))
        return "updated"


def apply_crash_detection(api_url: str | None = None) -> str:
    """Make sure the automation that marks a flow run Crashed when its heartbeats stop exists.

    A worker or node that dies mid-run leaves nobody to report the run's end; without this it stays
    Running forever (https://docs.prefect.io/v3/advanced/detect-zombie-flows).
    """
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ends = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")}
    automation = Automation(
        name=CRASH_DETECTION,
        description=f"Mark a flow run Crashed after {HEARTBEAT_TIMEOUT.seconds} s without a heartbeat.",
        trigger=EventTrigger(
            # From Running on, so that a run killed before its first heartbeat reached the server is covered.
            after={"prefect.flow-run.Running", "prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *ends},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=HEARTBEAT_TIMEOUT,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message="No heartbeat: the worker or node running this flow run died.",
            )
        ],
    )
    overrides = {PREFECT_API_URL: api_url} if api_url else {}
    with temporary_settings(overrides):
        try:
            # Prefect types read() as a coroutine (its async overloads); outside an event loop it runs sync.
            automation.id = Automation.read(name=CRASH_DETECTION).id  # type: ignore[attr-defined]
        except ValueError:
            automation.create()
            return "created"
        automation.update()
        return "updated"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m conveyor.workpools", description=__doc__)
    parser.add_argument("pools", nargs="*", default=list(POOL_TYPES), help="pools to apply (default: all)")
    for pool in parser.parse_args(argv).pools:
        print(f"work pool {pool:8} {apply(pool)} from {TEMPLATES / f'{pool}.json'}")
    print(f"automation {CRASH_DETECTION} {apply_crash_detection()}")


if __name__ == "__main__":
    main()
