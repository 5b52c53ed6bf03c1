"""A blocking API call on a thread, cancelled with the task that awaits it.

The MCP SDK cancels a request's task when the client sends ``notifications/cancelled``; a thread cannot be
cancelled, but the API call on it can: the task's cancellation cancels the call's ``Cancellation`` (the worker
stops the request and writes nothing), and the task then waits, shielded, for the thread to finish, so that
nothing of the call is still running once the cancellation has gone through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.lowlevel

from ..worker.cancellation import Cancellation

T = TypeVar("T")


async def run_cancellable(work: Callable[[Cancellation], T]) -> T:
    """``work(cancellation)`` on a worker thread; its result, or what it raised."""
    cancellation = Cancellation()
    outcome: list[T] = []
    failure: list[BaseException] = []
    finished = False

    def run() -> None:
        try:
            outcome.append(work(cancellation))
        except Exception as exc:  # handed to the awaiting task below, outside the task group
            failure.append(exc)

    async def cancel_with_the_task() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            if not finished:
                cancellation.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(cancel_with_the_task)
        try:
            await anyio.to_thread.run_sync(run)  # not abandoned on cancel: waits for the thread
        finally:
            finished = True
            group.cancel_scope.cancel()
    await anyio.lowlevel.checkpoint_if_cancelled()  # a cancelled task ends cancelled, whatever the call said
    if failure:
        raise failure[0]
    return outcome[0]
