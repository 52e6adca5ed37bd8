"""Limits shared by every API replica: `limits` fixed windows counted in the API database or in Redis.

Per user: authenticated requests per minute. Sign-in: attempts per client address per minute, and a lockout
of the account after repeated wrong passwords.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import Engine, Table, case, delete, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from conveyor.settings import ConfigurationError, Settings
from serving.db import RateLimitCounter

PURGE_EVERY_S = 300.0


class SQLStorage(Storage):
    """`limits` counters in the API's SQL database (SQLite >= 3.35 or PostgreSQL).

    A hit is one atomic upsert (`INSERT .. ON CONFLICT DO UPDATE .. RETURNING`), so the processes sharing the
    database count exactly together. Windows use each process's clock: keep replica clocks in sync (NTP).
    """

    _INSERTS: dict[str, Callable[[Table], sqlite.Insert | postgresql.Insert]] = {
        "sqlite": sqlite.insert,
        "postgresql": postgresql.insert,
    }

    def __init__(self, engine: Engine, wrap_exceptions: bool = False) -> None:
        super().__init__(wrap_exceptions=wrap_exceptions)
        if engine.dialect.name not in self._INSERTS:
            raise ConfigurationError(
                f"rate limits cannot be counted in a {engine.dialect.name} database: use SQLite or "
                "PostgreSQL for CONVEYOR_DATABASE_URL, or set CONVEYOR_RATE_LIMIT_STORAGE_URL=redis://..."
            )
        self.engine = engine
        self._insert = self._INSERTS[engine.dialect.name]
        self._table = RateLimitCounter.__table__
        self._purged_at = 0.0

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        table = self._table
        expired = table.c.expires_at <= now
        upsert = (
            self._insert(table)
            .values(key=key, hits=amount, expires_at=now + expiry)
            .on_conflict_do_update(
                index_elements=[table.c.key],
                set_={
                    "hits": case((expired, amount), else_=table.c.hits + amount),
                    "expires_at": case((expired, now + expiry), else_=table.c.expires_at),
                },
            )
            .returning(table.c.hits)
        )
        with self.engine.begin() as connection:
            hits: int = connection.execute(upsert).scalar_one()
        if now - self._purged_at > PURGE_EVERY_S:
            self._purged_at = now
            with self.engine.begin() as connection:
                connection.execute(delete(table).where(expired))
        return hits

    def _live(self, key: str, column):
        query = select(column).where(self._table.c.key == key, self._table.c.expires_at > time.time())
        with self.engine.connect() as connection:
            return connection.execute(query).scalar_one_or_none()

    def get(self, key: str) -> int:
        return self._live(key, self._table.c.hits) or 0

    def get_expiry(self, key: str) -> float:
        return self._live(key, self._table.c.expires_at) or time.time()

    def check(self) -> bool:
        try:
            with self.engine.connect() as connection:
                return connection.execute(text("SELECT 1")).scalar_one() == 1
        except SQLAlchemyError:
            return False

    def reset(self) -> int | None:
        with self.engine.begin() as connection:
            return connection.execute(delete(self._table)).rowcount

    def clear(self, key: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(self._table).where(self._table.c.key == key))


def open_storage(settings: Settings, engine: Engine) -> Storage:
    """The `limits` storage named by `CONVEYOR_RATE_LIMIT_STORAGE_URL` (ConfigurationError when it does not
    answer), else the API database behind `engine`."""
    url = settings.rate_limit_storage_url
    if not url:
        return SQLStorage(engine, wrap_exceptions=True)
    where = url.split("@")[-1]  # no credentials in the messages
    storage = storage_from_string(url, wrap_exceptions=True)
    if not isinstance(storage, Storage):
        raise ConfigurationError(
            f"CONVEYOR_RATE_LIMIT_STORAGE_URL: {where} names an async storage; drop `async+`"
        )
    if not storage.check():
        raise ConfigurationError(f"CONVEYOR_RATE_LIMIT_STORAGE_URL: {where} does not answer")
    return storage


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused (HTTP 429) and the whole seconds until it may be retried."""

    reason: str
    retry_after_s: int


class ApiLimits:
    """The API's limits, counted in one storage that every replica shares."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage = storage
        self._limiter = FixedWindowRateLimiter(storage)
        self.requests = RateLimitItemPerMinute(settings.api_rate_limit_per_minute)
        self.attempts = RateLimitItemPerMinute(settings.api_login_attempts_per_minute)
        self.lockout_minutes = settings.api_login_lockout_minutes
        self.failures = RateLimitItemPerMinute(settings.api_login_max_failures, self.lockout_minutes)
        self.lock = RateLimitItemPerMinute(1, self.lockout_minutes)  # one hit = locked for the window

    def _retry_after(self, item: RateLimitItem, *identifiers: str) -> int:
        reset = self._limiter.get_window_stats(item, *identifiers).reset_time
        return max(1, math.ceil(reset - time.time()))

    def _locked(self, username: str) -> Refusal:
        return Refusal(
            f"account locked after {self.failures.amount} failed sign-ins; "
            f"it unlocks {self.lockout_minutes} minutes after the last of them",
            self._retry_after(self.lock, "lock", username),
        )

    def hit_request(self, username: str) -> Refusal | None:
        """Count one authenticated request of `username`."""
        if self._limiter.hit(self.requests, "requests", username):
            return None
        return Refusal(
            f"rate limit of {self.requests.amount} requests per minute reached",
            self._retry_after(self.requests, "requests", username),
        )

    def start_login(self, username: str | None, address: str) -> Refusal | None:
        """Count a sign-in attempt from `address`, and against `username` (an account name or None),
        before the password is checked, so parallel guesses cannot pass the limits; a Refusal when over
        one or locked."""
        if not self._limiter.hit(self.attempts, "login-attempts", address):
            return Refusal(
                f"too many sign-in attempts from this address (limit {self.attempts.amount} per minute)",
                self._retry_after(self.attempts, "login-attempts", address),
            )
        if username is None:
            return None
        if not self._limiter.test(self.lock, "lock", username):
            return self._locked(username)
        if not self._limiter.hit(self.failures, "login-failures", username):  # the guesses in flight ran out
            self._limiter.hit(self.lock, "lock", username)
            return self._locked(username)
        return None

    def login_failed(self, username: str) -> None:
        """The attempt counted by `start_login` was a wrong password: lock the account at the limit."""
        if not self._limiter.test(self.failures, "login-failures", username):
            self._limiter.hit(self.lock, "lock", username)

    def login_succeeded(self, username: str) -> None:
        """The right password: the account's failures start again from zero."""
        self._limiter.clear(self.failures, "login-failures", username)
