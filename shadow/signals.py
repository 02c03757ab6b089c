"""SIGINT/SIGTERM inside an asyncio loop: handled by the loop, never by raising in the middle of it.

A Python-level handler that raises KeyboardInterrupt fires at whatever bytecode runs: inside the
event loop's own bookkeeping, between a lock's acquire and its `with` block, in a connection's
cleanup. What that leaves half-done can hang the shutdown that follows (CI saw the demo not stop
within 60 s of a SIGTERM that arrived during its traffic; not reproduced in 55 local runs, so
the exact spot is unknown). Handlers registered with `loop.add_signal_handler` run as ordinary
callbacks between tasks instead, so stopping cancels the work at an `await`, cleanly.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_signals_call(callback: Callable[[signal.Signals], None]) -> Iterator[bool]:
    """Inside the block, SIGINT and SIGTERM call `callback(signal)` from the running loop; after it
    the handlers from before the block are back (`remove_signal_handler` alone would leave the
    default action, dropping a caller's own handler). Yields False, doing nothing, off the main
    thread, where signals cannot be handled."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, callback, sig)
    try:
        yield True
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            if handler is not None:  # None: set from C, not restorable from Python
                signal.signal(sig, handler)


def run_until_stop_signal[T](work: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(work)`, where SIGINT or SIGTERM cancels `work` cleanly (its `finally` blocks and
    context managers run) and then raises KeyboardInterrupt here, outside the loop."""
    received: list[signal.Signals] = []

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None

        def stop(sig: signal.Signals) -> None:
            received.append(sig)
            task.cancel()

        with stop_signals_call(stop):
            return await work

    try:
        result = asyncio.run(main())
    except asyncio.CancelledError:
        if received:
            raise KeyboardInterrupt from None
        raise
    if received:  # `work` swallowed the cancellation; the signal still means stop
        raise KeyboardInterrupt
    return result
