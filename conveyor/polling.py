"""Waiting for something to happen: one polling helper (tenacity) for processes, servers and journals."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    retry_if_not_result,
    stop_after_delay,
    wait_fixed,
)

T = TypeVar("T")


def wait_until(
    probe: Callable[[], T],
    timeout_s: float,
    every_s: float,
    failure: Callable[[], Exception],
    transient: tuple[type[BaseException], ...] = (),
) -> T:
    """The first truthy result of `probe`, asked every `every_s` seconds; `failure()` is raised when none
    came within `timeout_s`. Exceptions of the `transient` types mean "not yet"; any other raised by
    `probe` ends the wait at once."""
    retry = retry_if_not_result(bool) | retry_if_exception_type(transient)  # () matches no exception
    try:
        return Retrying(retry=retry, stop=stop_after_delay(timeout_s), wait=wait_fixed(every_s))(probe)
    except RetryError:
        raise failure() from None
