"""The one door to LanceDB: connections and tables of the knowledge store."""

from __future__ import annotations

from functools import cache

import lancedb

from conveyor.settings import get_settings


@cache
def _connect(uri: str) -> lancedb.DBConnection:
    return lancedb.connect(uri)


def connect() -> lancedb.DBConnection:
    """A connection to the configured LanceDB (folder under the state folder by default)."""
    return _connect(get_settings().knowledge_uri)
