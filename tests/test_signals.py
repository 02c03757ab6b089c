"""SIGINT/SIGTERM during asyncio work: cancelled cleanly, KeyboardInterrupt outside the loop,
the caller's own handlers back afterwards."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from shadow.signals import run_until_stop_signal, stop_signals_call


@pytest.fixture
def own_handlers() -> Iterator[list[int]]:
    """A caller's SIGTERM/SIGINT handler that records what reaches it; the originals restored after."""
    seen: list[int] = []

    def handler(signum: int, _frame: FrameType | None) -> None:
        seen.append(signum)

    before = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for sig, h in before.items():
            signal.signal(sig, h)


async def _busy_until_cancelled(cleaned: list[str], sig: int) -> str:
    """Many tasks handing futures to each other, so the signal (sent by a timer once the loop runs)
    lands anywhere in the loop's own code."""

    def resolve(fut: asyncio.Future[int], n: int) -> None:
        if not fut.done():  # cancelled by the signal in between
            fut.set_result(n)

    async def ping_pong(n: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(100_000):  # bounded: ~1 s if the signal were lost
            fut: asyncio.Future[int] = loop.create_future()
            loop.call_soon(resolve, fut, n)
            await fut

    timer = threading.Timer(random.uniform(0.001, 0.03), os.kill, (os.getpid(), sig))
    timer.start()
    try:
        await asyncio.gather(*(ping_pong(n) for n in range(8)))
    finally:
        cleaned.append("finally ran")
        timer.join()
    return "finished"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_cancels_cleanly_and_raises_keyboard_interrupt(own_handlers: list[int], sig: int) -> None:
    for _ in range(20):  # signals at random points of a busy loop; each run must end, not hang
        cleaned: list[str] = []
        with pytest.raises(KeyboardInterrupt):
            run_until_stop_signal(_busy_until_cancelled(cleaned, sig))
        assert cleaned == ["finally ran"]
    assert own_handlers == []  # the loop handled every signal; the caller's handler saw none
    os.kill(os.getpid(), signal.SIGTERM)  # and after the block the caller's handler is back
    assert own_handlers == [signal.SIGTERM]


def test_without_a_signal_the_result_comes_back(own_handlers: list[int]) -> None:
    async def quick() -> int:
        await asyncio.sleep(0)
        return 7

    assert run_until_stop_signal(quick()) == 7
    os.kill(os.getpid(), signal.SIGINT)
    assert own_handlers == [signal.SIGINT]


def test_a_swallowed_cancellation_still_stops(own_handlers: list[int]) -> None:
    async def stubborn() -> str:
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, os.kill, os.getpid(), signal.SIGTERM)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "swallowed"
        return "slept"

    with pytest.raises(KeyboardInterrupt):
        run_until_stop_signal(stubborn())


def test_off_the_main_thread_nothing_is_installed() -> None:
    outcome: list[bool] = []

    async def probe() -> None:
        with stop_signals_call(lambda _sig: None) as installed:
            outcome.append(installed)

    thread = threading.Thread(target=asyncio.run, args=(probe(),))
    thread.start()
    thread.join(timeout=10)
    assert outcome == [False]
