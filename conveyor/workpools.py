"""Work pools from the base job templates in `deployments/work-pools/`: `python -m conveyor.workpools [POOL...]`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from conveyor.settings import ConfigurationError

TEMPLATES = Path(__file__).resolve().parent.parent / "deployments" / "work-pools"
POOL_TYPES = {"local": "process", "docker": "docker", "k8s-gpu": "kubernetes"}


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m conveyor.workpools", description=__doc__)
    parser.add_argument("pools", nargs="*", default=list(POOL_TYPES), help="pools to apply (default: all)")
    for pool in parser.parse_args(argv).pools:
        print(f"work pool {pool:8} {apply(pool)} from {TEMPLATES / f'{pool}.json'}")


if __name__ == "__main__":
    main()
