"""Per-user request rate limit: a token bucket that refills continuously."""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """Allow `per_minute` requests per key on average, in bursts of up to the same number."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take one request for `key`: 0.0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.refill_per_second)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return (1.0 - tokens) / self.refill_per_second
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
