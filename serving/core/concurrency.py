"""Run the slow, blocking agent and LLM calls off the event loop, each wait bounded by a deadline."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import anyio

T = TypeVar("T")
_END = object()


class GenerationTimeout(TimeoutError):
    """The model did not answer (or send the next token) within the deadline."""


async def call_blocking(fn: Callable[..., T], *args: Any, timeout: float) -> T:
    """`fn(*args)` in a worker thread; GenerationTimeout after `timeout` s (the thread ends on its own)."""
    try:
        with anyio.fail_after(timeout):
            return await anyio.to_thread.run_sync(partial(fn, *args), abandon_on_cancel=True)
    except TimeoutError:
        raise GenerationTimeout(f"no answer within {timeout:g} s") from None


class StreamClosed(Exception):
    """Raised by `emit` in the producer's thread once the consumer has stopped listening."""


async def iterate_blocking(
    produce: Callable[[Callable[[T], None]], None], timeout: float
) -> AsyncGenerator[T, None]:
    """Items that `produce(emit)` emits from its own thread; waits longer than `timeout` s raise.

    The one bridge from blocking producers (an LLM's token iterator, an agent's token callback) to the event
    loop. When the consumer stops early (client gone, error), the next `emit` raises StreamClosed in the
    producer, so an abandoned stream frees the model quickly.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
    stop = threading.Event()

    def deliver(item: Any, error: BaseException | None = None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (item, error))
        except RuntimeError:  # the event loop is gone (server shutting down)
            stop.set()

    def emit(item: T) -> None:
        if stop.is_set():
            raise StreamClosed
        deliver(item)

    def run() -> None:
        try:
            produce(emit)
            deliver(_END)
        except StreamClosed:
            pass
        except Exception as exc:  # handed to the consumer, which raises it in the request
            deliver(_END, exc)

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(run,), name="conveyor-stream", daemon=True).start()
    try:
        while True:
            try:
                item, error = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                raise GenerationTimeout(f"no token within {timeout:g} s") from None
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()


def emit_each(make_iterator: Callable[[], Iterator[T]]) -> Callable[[Callable[[T], None]], None]:
    """A producer for `iterate_blocking` that emits a blocking iterator's items and closes it when done."""

    def produce(emit: Callable[[T], None]) -> None:
        iterator = make_iterator()
        try:
            for item in iterator:
                emit(item)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    return produce
