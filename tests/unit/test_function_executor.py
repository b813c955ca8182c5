"""FunctionExecutor: how a handler's ending becomes an Outcome, stops included."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from zbrain.worker import AttemptOutcome, Cancellation, FunctionExecutor, StopReason


async def run(handler: Any, *, stop_once: asyncio.Event | None = None) -> Any:
    """The handler's outcome; the attempt is told to stop once `stop_once` is
    set (by the handler, when it runs)."""
    cancel = Cancellation()

    async def stop_when(told: asyncio.Event) -> None:
        await told.wait()
        cancel.set(StopReason.CANCELED)

    stopper = asyncio.ensure_future(stop_when(stop_once)) if stop_once is not None else None
    try:
        return await FunctionExecutor(handler).execute(None, None, cancel)  # type: ignore[arg-type]
    finally:
        if stopper is not None:
            stopper.cancel()


async def test_the_return_value_is_the_output() -> None:
    async def answer(job: Any) -> int:
        return 42

    outcome = await run(answer)

    assert (outcome.kind, outcome.output) == (AttemptOutcome.SUCCEEDED, 42)


async def test_a_raising_handler_fails_with_its_error() -> None:
    async def broken(job: Any) -> None:
        raise KeyError("missing")

    outcome = await run(broken)

    assert outcome.kind is AttemptOutcome.FAILED
    assert outcome.error == "KeyError: 'missing'"


async def test_a_stopped_handler_is_cancelled_and_fails_as_stopped() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever(job: Any) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)  # runs until stopped
        except asyncio.CancelledError:
            cancelled.set()
            raise

    outcome = await run(forever, stop_once=started)

    assert cancelled.is_set()
    assert outcome.kind is AttemptOutcome.FAILED
    assert outcome.error.startswith("stopped: canceled by user")


async def test_a_handler_that_swallows_the_stop_still_fails_as_stopped() -> None:
    started = asyncio.Event()

    async def stubborn(job: Any) -> str:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(3600)  # runs until stopped
        return "done anyway"

    outcome = await run(stubborn, stop_once=started)

    assert outcome.kind is AttemptOutcome.FAILED
    assert outcome.error.startswith("stopped:")


async def test_cancelling_the_attempt_itself_is_not_swallowed() -> None:
    cancel = Cancellation()
    started = asyncio.Event()

    async def forever(job: Any) -> None:
        started.set()
        await asyncio.sleep(3600)  # runs until stopped

    attempt = asyncio.create_task(FunctionExecutor(forever).execute(None, None, cancel))  # type: ignore[arg-type]
    await started.wait()
    cancel.set(StopReason.SHUTDOWN)  # told to stop and cancelled at the same moment
    attempt.cancel()

    with pytest.raises(asyncio.CancelledError):
        await attempt
