"""The federation's journal: one JSON line per event, written by the ServerApp and followed by the flow."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.polling import wait_until

JOURNAL_FILE = "journal.jsonl"


class FederationError(RuntimeError):
    """The federation failed or stalled; the message says which sites, round or process."""


class Journal:
    """Append-only JSON-lines file: `sites`, `initial`, `round`, `finished` or `failed` events."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, event: str, **fields: Any) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")

    def events(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def wait_for(
        self,
        wanted: Callable[[dict[str, Any]], bool],
        timeout_s: float,
        what: str,
        check_alive: Callable[[], None],
        poll_s: float = 0.5,
    ) -> dict[str, Any]:
        """The first event that is `wanted`; raises FederationError on a `failed` event or after `timeout_s`.

        `check_alive` is called while waiting and raises when a process it watches has died.
        """

        def first_wanted() -> dict[str, Any]:  # {} = not yet
            for event in self.events():
                if event["event"] == "failed":
                    raise FederationError(f"federation failed: {event['reason']}")
                if wanted(event):
                    return event
            check_alive()
            return {}

        return wait_until(
            first_wanted, timeout_s, poll_s, lambda: FederationError(f"no {what} within {timeout_s:.0f} s")
        )
