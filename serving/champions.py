"""Champion models from the MLflow registry, loaded once per version; a moved `@champion` is picked up."""

from __future__ import annotations

import threading

from conveyor import registry
from conveyor.tracking import PyFuncModel


class ChampionCache:
    """Keeps the loaded champion of each model name; reloads when the alias moves to another version."""

    def __init__(self) -> None:
        self._models: dict[str, tuple[str, PyFuncModel]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> tuple[str, PyFuncModel]:
        """(version, model) of `models:/{name}@champion`; registry.ModelNotFound when there is none."""
        version = registry.champion_version(name)
        if version is None:
            raise registry.ModelNotFound(
                f"model {name!r} has no @{registry.CHAMPION} version in the registry"
            )
        with self._lock:  # one load per new version, however many requests arrive together
            cached = self._models.get(name)
            if cached is None or cached[0] != version:
                self._models[name] = cached = registry.load_champion(name)
        return cached
