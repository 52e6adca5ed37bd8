"""Agents' system prompts, versioned in MLflow's prompt registry as `prompts:/conveyor-<agent>-system`.

The text in code is registered as a new version, and moved under `@production`, whenever it changes (the
prompt's tag `conveyor.code_sha256` remembers which text was registered last); otherwise the version under
`@production` is used, so a version promoted in the MLflow UI takes over without a deploy until the code's
text changes again. Answers name the version they used (lineage `prompts`). The registry is read at most
once a minute per prompt; while the tracking store is unreachable the text in code is used, with version
null and one warning.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from pydantic import BaseModel

from conveyor import lineage, tracking
from conveyor.lineage import PromptRef
from conveyor.settings import get_settings

log = logging.getLogger(__name__)
PRODUCTION = "production"
CODE_TAG = "conveyor.code_sha256"
RECHECK_S = 60.0  # how long a prompt read from the registry is used before reading it again


class Prompt(BaseModel):
    name: str
    text: str
    version: int | None  # None: the registry was unreachable and the text in code is used

    @property
    def ref(self) -> PromptRef:
        return PromptRef(name=self.name, version=self.version)


def prompt_name(agent: str) -> str:
    return f"conveyor-{agent}-system"


def system_prompt(agent: str, text: str) -> Prompt:
    """The system prompt of `agent` to use now (`text` is the one in code), noted in the answer's lineage.

    Args:
        agent: the agent's name; the prompt is `conveyor-<agent>-system`.
        text: the prompt as the code has it.
    """
    prompt = _registry.resolve(prompt_name(agent), text)
    lineage.note_prompt(prompt.ref)
    return prompt


class _Registry:
    """Prompts read from MLflow, kept for RECHECK_S per tracking URI, name and text in code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[tuple[str, str, str], tuple[float, Prompt]] = {}
        self._down: set[str] = set()  # tracking URIs already warned about

    def resolve(self, name: str, text: str) -> Prompt:
        uri = get_settings().tracking_uri
        key = (uri, name, _sha256(text))
        checked_at, known = self._known.get(key, (float("-inf"), None))
        if known is not None and time.monotonic() - checked_at < RECHECK_S:
            return known
        if not tracking.reachable():
            return self._unversioned(uri, name, text, "the tracking store is unreachable")
        try:
            with self._lock:  # one registration per text change in this process
                prompt = _sync(name, text, key[2])
        except Exception as exc:  # any failure of the store: answer with the text in code
            return self._unversioned(uri, name, text, f"{type(exc).__name__}: {exc}")
        if uri in self._down:
            self._down.discard(uri)
            log.info("prompts are versioned again: MLflow answers")
        self._known[key] = (time.monotonic(), prompt)
        return prompt

    def _unversioned(self, uri: str, name: str, text: str, why: str) -> Prompt:
        if uri not in self._down:
            self._down.add(uri)
            log.warning("prompts are not versioned (%s): agents use the text in code", why[:300])
        return Prompt(name=name, text=text, version=None)

    def clear(self) -> None:
        self._known.clear()


def _sync(name: str, text: str, sha256: str) -> Prompt:
    """`@production` of `name`, after registering `text` if it is not the text registered last."""
    current = tracking.prompt_version(name, PRODUCTION)
    registered = (tracking.prompt_tags(name) or {}).get(CODE_TAG)
    if current is not None and registered == sha256:
        return Prompt(name=name, text=current.template, version=current.version)
    version = tracking.register_prompt(
        name,
        text,
        alias=PRODUCTION,
        message="the text in code changed" if current else "first registration from code",
        tags={CODE_TAG: sha256, "conveyor.git_commit": tracking.git_commit() or "unknown"},
        name_tags={CODE_TAG: sha256},
    )
    log.info("registered prompt %s version %s as @%s", name, version, PRODUCTION)
    return Prompt(name=name, text=text, version=version)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


_registry = _Registry()


def forget() -> None:
    """Read every prompt from the registry again on next use (after promoting a version by hand)."""
    _registry.clear()
