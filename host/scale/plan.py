"""Which workers a pool runs, on which devices: its arguments as one Struct, checked before any worker starts.

``WorkerPool``, the batch CLI's ``--workers`` and Ray's ``actors=`` take the same counts; a device is the wire's
``Device`` (the worker's ``--device`` takes the same). msgspec refuses a bad value in one line naming the argument
(``workers=2.5``, ``devices=[]``, ``"gpu0"``), and a ``cuda:N`` this machine does not have is refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from rpcworker.wire.messages import Device

Role = Literal["both", "views", "mesh"]
WorkerCount = Annotated[int, Meta(ge=1, description="workers of a pool, or Ray actors")]
Devices = Annotated[list[Device], Meta(min_length=1, description="one worker per entry")]
Seconds = Annotated[float, Meta(ge=0)]
ResourceAmount = Annotated[float, Meta(ge=0, description="GPUs or CPUs a Ray actor asks for")]
DEVICE_HINT = "a device is cpu, cuda or cuda:N"
DEFAULT_CANCEL_GRACE_S = 30.0
"""How long a pool worker may take to honour a cancel before it is killed (``cancel_grace``)."""


class PoolSplit(Struct, frozen=True, forbid_unknown_fields=True):
    """Split mode: the views workers' devices and the mesh workers' (a list each; `pool_options` makes one device
    given alone a list of one)."""

    views: Devices
    mesh: Devices


class PoolOptions(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``WorkerPool``'s own arguments; at most one of ``devices``, ``workers`` and ``split``."""

    devices: Devices | None = None
    workers: WorkerCount | None = None
    split: PoolSplit | None = None
    device: Device | None = None
    """With ``workers``: the device they all run on (None: the worker's default)."""
    cancel_grace: Seconds | None = DEFAULT_CANCEL_GRACE_S


class ActorOptions(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How many Ray actors (None: one per GPU of the cluster) and what each asks Ray for."""

    actors: WorkerCount | None = None
    num_gpus: ResourceAmount = 1
    num_cpus: ResourceAmount = 1


def _converted(given: dict[str, Any], kind: type[Any], what: str) -> Any:
    try:
        return msgspec.convert(given, kind)
    except msgspec.ValidationError as exc:
        hint = f" ({DEVICE_HINT})" if "regex" in str(exc) else ""
        raise ValueError(f"invalid {what}: {exc}{hint}") from None


def pool_options(**given: Any) -> PoolOptions:
    """The pool's arguments as ``PoolOptions``; a bad one raises ValueError, one line naming it."""
    if isinstance(given.get("split"), Mapping):
        # One device or a list of them: always a list here. (A field typed as the union of a pattern-checked str
        # and a list corrupts memory at exit under msgspec 0.20 on Python 3.9, so the types take the list alone.)
        given["split"] = {role: [entry] if isinstance(entry, str) else entry for role, entry in given["split"].items()}
    options: PoolOptions = _converted(given, PoolOptions, "pool arguments")
    named = [name for name in ("devices", "workers", "split") if getattr(options, name) is not None]
    if len(named) > 1:
        raise ValueError(f"give one of devices, workers and split, not {' and '.join(named)}")
    return options


def actor_options(**given: Any) -> ActorOptions:
    """Ray's actor arguments as ``ActorOptions``; a bad one raises ValueError, one line naming it."""
    options: ActorOptions = _converted(given, ActorOptions, "Ray actor arguments")
    return options


def worker_plan(options: PoolOptions, gpus: Sequence[str]) -> list[tuple[Role, str | None]]:
    """(role, device) per worker; ``gpus``: this process's visible GPUs, which every ``cuda:N`` must name."""
    if options.split is not None:
        plan: list[tuple[Role, str | None]] = []
        roles: list[tuple[Role, str | list[str]]] = [("views", options.split.views), ("mesh", options.split.mesh)]
        for role, entry in roles:
            plan += [(role, one) for one in ([entry] if isinstance(entry, str) else entry)]
    elif options.workers is not None:
        plan = [("both", options.device)] * options.workers
    elif options.devices is not None:
        plan = [("both", device) for device in options.devices]
    elif not gpus:
        raise ValueError(
            "no GPU is visible (CUDA_VISIBLE_DEVICES / nvidia-smi); pass workers=N to run N workers on the CPU"
        )
    else:
        plan = [("both", f"cuda:{i}") for i in range(len(gpus))]
    for _, device in plan:
        check_exists(device, gpus)
    return plan


def check_exists(device: str | None, gpus: Sequence[str]) -> None:
    """``cuda:N`` names GPU N of ``gpus``; refused here, by name, rather than by a worker that cannot start."""
    if device is None or not device.startswith("cuda:"):
        return
    index = int(device.split(":", 1)[1])
    if index >= len(gpus):
        seen = f"{len(gpus)} GPU(s) visible ({', '.join(gpus)})" if gpus else "no GPU is visible"
        raise ValueError(f"device {device} does not exist: {seen} (CUDA_VISIBLE_DEVICES / nvidia-smi)")
