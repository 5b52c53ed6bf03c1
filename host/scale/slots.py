"""The pool's bookkeeping: which GPUs are visible, one slot per worker, least-loaded choice, restarts.

A slot owns one ``InstantMeshWorker`` pinned to one device through ``CUDA_VISIBLE_DEVICES`` (so inside the
worker the GPU is always ``cuda``) and counts the requests it has in flight. Choosing a slot and counting
the request happen under one lock, so many threads never pile onto the same idle worker.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rpcworker.wire.messages import StatusResult

from ..api.facade import InstantMeshWorker
from ..worker.busy import BUSY_LONGEST_WAIT_S
from ..worker.errors import HostError, WeightsMissing, WorkerStartError
from ..worker.process import WorkerCommand
from .plan import Role

log = logging.getLogger("host.scale.pool")

ROLE_MODELS: dict[str, tuple[str, ...]] = {"both": ("views", "mesh"), "views": ("views",), "mesh": ("mesh",)}
SERVES = {"views": ("both", "views"), "mesh": ("both", "mesh")}
"""Which slot roles can take a views request and a mesh request."""

NVIDIA_SMI_TIMEOUT_S = 20.0
STATUS_TIMEOUT_S = 5.0


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as the values CUDA_VISIBLE_DEVICES takes (indices or UUIDs).

    CUDA_VISIBLE_DEVICES when set (empty or -1: none), else one entry per line of ``nvidia-smi -L``;
    no torch is imported.
    """
    configured = os.environ.get("CUDA_VISIBLE_DEVICES")
    if configured is not None:
        entries = [entry.strip() for entry in configured.split(",") if entry.strip()]
        return [] if not entries or entries[0] == "-1" else entries
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(listed.stdout.splitlines()) if line.startswith("GPU ")]


def pinned_command(base: WorkerCommand, device: str | None, gpus: Sequence[str]) -> tuple[WorkerCommand, str | None]:
    """The worker command and --device for ``device``: ``cuda:N`` pins GPU N of ``gpus`` (this process's
    visible GPUs, which ``plan.worker_plan`` checked it names) with CUDA_VISIBLE_DEVICES and tells the worker
    ``cuda``; other devices pass through."""
    if device is None or not device.startswith("cuda:"):
        return base, device
    physical = gpus[int(device.split(":", 1)[1])]
    env = dict(base.env, CUDA_VISIBLE_DEVICES=physical)
    return WorkerCommand(list(base.prefix), env, base.add_project_to_path, base.module), "cuda"


@dataclass
class Slot:
    """One worker of the pool and its counters; mutable fields change under the pool's lock."""

    index: int
    role: Role
    device: str | None
    worker: InstantMeshWorker
    in_flight: int = 0
    done: int = 0
    failed: int = 0
    restarting: bool = False
    broken: str | None = None
    """Why the worker could not be restarted; a broken slot gets no more work."""

    @property
    def pid(self) -> int | None:
        process = self.worker.client.process
        return process.pid if process is not None and process.alive else None

    @property
    def restarts(self) -> int:
        return max(0, self.worker.client.generation - 1)


@dataclass(frozen=True)
class PoolWorkerStatus:
    """One worker as ``WorkerPool.status()`` sees it; ``worker`` is its own status reply while it runs."""

    index: int
    role: str
    device: str | None
    pid: int | None
    alive: bool
    in_flight: int
    requests_done: int
    requests_lost: int
    """Requests that failed because this worker crashed or stalled (each was retried elsewhere once)."""
    restarts: int
    worker: StatusResult | None
    problem: str | None = None


class Slots:
    """The pool's workers with least-loaded choice; ``acquire`` waits while every candidate restarts."""

    def __init__(self, slots: list[Slot], startup_timeout: float) -> None:
        self.slots = slots
        self.startup_timeout = startup_timeout
        self.warm_models: bool = False
        self.closing = False
        self.ended = 0
        """Requests of the pool ended so far, on any worker (a busy request waits for this to change)."""
        self._changed = threading.Condition()

    def __iter__(self) -> Iterator[Slot]:
        return iter(self.slots)

    def __len__(self) -> int:
        return len(self.slots)

    def serving(self, kind: str) -> list[Slot]:
        return [slot for slot in self.slots if slot.role in SERVES[kind]]

    def acquire(self, kind: str, avoid: Slot | None = None) -> Slot:
        """The least-loaded slot for ``kind`` (``views`` or ``mesh``), preferring any but ``avoid``;
        counts the request on it before returning."""
        with self._changed:
            while True:
                if self.closing:
                    raise HostError("the worker pool is closed")
                candidates = [s for s in self.serving(kind) if s.broken is None]
                if not candidates:
                    reasons = "; ".join(f"worker {s.index}: {s.broken}" for s in self.serving(kind))
                    raise WorkerStartError(f"no worker of the pool can take {kind} requests ({reasons})")
                ready = [s for s in candidates if not s.restarting]
                others = [s for s in ready if s is not avoid]
                choice = others or ready
                if choice:
                    slot = min(choice, key=lambda s: (s.in_flight, s.index))
                    slot.in_flight += 1
                    return slot
                if not self._changed.wait(self.startup_timeout):
                    raise WorkerStartError(f"no {kind} worker finished restarting within {self.startup_timeout:g} s")

    def take(self, slot: Slot) -> Slot:
        """Counts a request on a given slot (views going back to the worker that holds them)."""
        with self._changed:
            slot.in_flight += 1
            return slot

    @contextmanager
    def held(self, slot: Slot) -> Iterator[Slot]:
        """Marks the end of a request taken with ``acquire``, whatever happens inside."""
        try:
            yield slot
        finally:
            with self._changed:
                slot.in_flight -= 1
                self.ended += 1
                self._changed.notify_all()

    def wait_for_end(self, seen: int, pause: float) -> None:
        """After a busy refusal, while the refused request still counts as in flight: until a request of the
        pool ends after ``ended`` was ``seen`` (at most BUSY_LONGEST_WAIT_S), or, with no other request in
        flight, for ``pause``."""
        with self._changed:
            others = sum(slot.in_flight for slot in self.slots) > 1
            self._changed.wait_for(lambda: self.ended != seen or self.closing, BUSY_LONGEST_WAIT_S if others else pause)

    def count(self, slot: Slot, ok: bool) -> None:
        with self._changed:
            if ok:
                slot.done += 1
            else:
                slot.failed += 1

    def restart_in_background(self, slot: Slot) -> None:
        """After a crash: a new worker in the slot, started off the caller's thread, so the caller can go
        on to retry elsewhere at once; requests for this slot wait (``acquire``) until it is up."""
        with self._changed:
            if slot.restarting or self.closing:
                return
            slot.restarting = True
        threading.Thread(target=self._restart, args=(slot,), name=f"pool-restart-{slot.index}", daemon=True).start()

    def _restart(self, slot: Slot) -> None:
        problem = None
        try:
            slot.worker.client.start()
            if self.warm_models and not self.closing:
                slot.worker.load(ROLE_MODELS[slot.role])
            log.info("pool worker %d restarted (pid %s)", slot.index, slot.pid)
        except Exception as exc:  # noqa: BLE001 - whatever stopped the restart marks the slot broken, with why
            problem = str(exc).splitlines()[0]
            log.error("pool worker %d could not be restarted: %s", slot.index, problem)
        with self._changed:
            slot.restarting = False
            slot.broken = problem
            self._changed.notify_all()

    def status(self, slot: Slot) -> PoolWorkerStatus:
        client = slot.worker.client
        reply: StatusResult | None = None
        problem = slot.broken or ("restarting" if slot.restarting else None)
        if client.alive and not slot.restarting:
            try:
                reply = client.status(timeout=STATUS_TIMEOUT_S)
            except HostError as exc:
                problem = str(exc).splitlines()[0]
        elif problem is None:
            problem = "not running (starts on its next request)"
        with self._changed:
            return PoolWorkerStatus(
                slot.index,
                slot.role,
                slot.device,
                slot.pid,
                client.alive,
                slot.in_flight,
                slot.done,
                slot.failed,
                slot.restarts,
                reply,
                problem,
            )

    def shutdown(self) -> None:
        with self._changed:
            self.closing = True
            self._changed.notify_all()


def start_all(slots: Sequence[Slot]) -> None:
    """Starts every worker at once (a models env takes seconds to import); if any fails, all are stopped."""
    errors: dict[int, BaseException] = {}

    def start(slot: Slot) -> None:
        try:
            slot.worker.start()
        except BaseException as exc:  # noqa: BLE001 - reported below, with the worker named
            errors[slot.index] = exc

    threads = [threading.Thread(target=start, args=(slot,), name=f"pool-start-{slot.index}") for slot in slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        close_all(slots)
        index, first = min(errors.items())
        device = slots[index].device or "default device"
        error = WeightsMissing if isinstance(first, WeightsMissing) else WorkerStartError  # still one line
        raise error(f"pool worker {index} ({device}) could not start: {first}") from first


def close_all(slots: Sequence[Slot]) -> None:
    """Stops every worker in parallel (each: shutdown request, EOF, SIGTERM, SIGKILL)."""
    threads = [threading.Thread(target=slot.worker.close, name=f"pool-close-{slot.index}") for slot in slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def in_parallel(slots: Sequence[Slot], work: Any) -> list[Any]:
    """``work(slot)`` on every slot at once; returns the results in slot order, raises the first error."""
    results: list[Any] = [None] * len(slots)
    errors: list[BaseException] = []

    def run(slot: Slot, position: int) -> None:
        try:
            results[position] = work(slot)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(slot, i)) for i, slot in enumerate(slots)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results
