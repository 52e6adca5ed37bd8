"""The original mobile client's calls against a running API (docs/api.md, "Original client contract").

`python -m serving.contract_client http://127.0.0.1:8000 --password ...` signs in, verifies the token, reads
the user, sends a chat message, reads a dataset and its summary statistics, analyses sentiment, starts a
training (`/ml/train`), follows it (`/data/status`) to the end and predicts with the model it registered.
One line per call; exit status 1 names the call that failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import httpx

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class ContractError(RuntimeError):
    """A call of the contract failed; the message names it with the status and body."""


class ContractClient:
    """JSON sign-in, then bearer calls to the contract's paths."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http

    def login(self, username: str, password: str) -> str:
        token = self.call("POST", "/auth/login", json={"username": username, "password": password})["token"]
        self.http.headers["Authorization"] = f"Bearer {token}"
        return token

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if not response.is_success:
            raise ContractError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    def wait(self, task_id: str, timeout_s: float = 900) -> dict:
        """`/data/status/{task_id}` until the run ends."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.call("GET", f"/data/status/{task_id}")
            if status["status"] in TERMINAL:
                return status
            if time.monotonic() > deadline:
                raise ContractError(f"task {task_id} still {status['status']} after {timeout_s:.0f} s")
            time.sleep(2)


def run(
    client: ContractClient, username: str, password: str, model: str = "contract-forest"
) -> dict[str, Any]:
    """Every call of the contract in a user's order; returns each answer by call name."""
    token = client.login(username, password)
    seen: dict[str, Any] = {"login": {"token": f"{token[:12]}..."}}
    seen["verify"] = client.call("POST", "/auth/verify", json={"token": token})
    seen["user"] = client.call("GET", f"/users/{username}")
    seen["chat"] = client.call("POST", "/chat/message", json={"message": "Say hello in three words."})
    seen["dataset"] = client.call("GET", "/data/datasets/breast_cancer", params={"limit": 1})
    seen["summary"] = client.call("GET", "/analytics/summary/breast_cancer")
    seen["sentiment"] = client.call("POST", "/ml/analyze-sentiment", json={"text": "This release is great!"})
    params = {
        "dataset": "breast_cancer",
        "target": "malignant",
        "model_name": model,
        "forest": {"n_estimators": 10},
    }
    seen["train"] = client.call("POST", "/ml/train", json={"flow": "train-tabular", "parameters": params})
    seen["status"] = client.wait(seen["train"]["task_id"])
    if seen["status"]["status"] != "COMPLETED":
        raise ContractError(f"training ended {seen['status']['status']}: {seen['status'].get('message')}")
    record = {k: v for k, v in seen["dataset"]["data"][0].items() if k != "malignant"}
    seen["predict"] = client.call("POST", "/ml/predict", json={"model": model, "records": [record]})
    return seen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the API, e.g. http://127.0.0.1:8000")
    parser.add_argument("--username", default="admin")
    parser.add_argument(
        "--password",
        default=os.environ.get("CONVEYOR_ADMIN_PASSWORD"),
        help="default: $CONVEYOR_ADMIN_PASSWORD",
    )
    args = parser.parse_args(argv)
    if not args.password:
        parser.error("give --password or set CONVEYOR_ADMIN_PASSWORD")
    with httpx.Client(base_url=args.url, timeout=600) as http:
        try:
            answers = run(ContractClient(http), args.username, args.password)
        except (ContractError, httpx.HTTPError) as exc:
            print(f"contract: FAILED {exc}", file=sys.stderr)
            raise SystemExit(1) from None
    for name, answer in answers.items():
        print(f"{name}: {str(answer)[:160]}")
    print("contract: every call passed")


if __name__ == "__main__":
    main()
