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


async def iterate_blocking(
    make_iterator: Callable[[], Iterator[T]], timeout: float
) -> AsyncGenerator[T, None]:
    """Items of a blocking iterator, produced in its own thread; waits longer than `timeout` s raise.

    When the consumer stops early (client gone, error), the producer stops after its current item
    and the iterator is closed, so an abandoned stream frees the model quickly.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
    stop = threading.Event()

    def deliver(item: Any, error: BaseException | None = None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (item, error))
        except RuntimeError:  # the event loop is gone (server shutting down)
            stop.set()

    def produce() -> None:
        iterator = None
        try:
            iterator = make_iterator()
            for item in iterator:
                if stop.is_set():
                    break
                deliver(item)
            deliver(_END)
        except Exception as exc:  # handed to the consumer, which raises it in the request
            deliver(_END, exc)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(produce,), name="conveyor-stream", daemon=True).start()
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
