"""The batch CLI's objects through a batching worker with requests in flight (``host.api.map``).

Each input is prepared in the host just before its views are requested, so the worker's batches fill while
the host works ahead; results come back in input order. What `run_object` guarantees one object at a time
holds here too: a prepared input takes its final name only with its mesh, and a lost worker fails the
objects it held (the next ones go to the restarted worker). A status line (the printer's) says, as each
object ends, how many are done, in flight and left, at how many per minute, and when the rest should be done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..api.facade import InstantMeshWorker
from ..api.map import map_objects
from ..api.outcome import ObjectTarget
from ..api.progress import ProgressPrinter
from ..api.tally import ObjectTally
from ..worker.errors import WorkerCrashed
from .inputs import ObjectInput
from .objects import (
    ImageSent,
    ObjectOutputs,
    ObjectResult,
    Settings,
    describe_failure,
    drop_staged,
    finish_object,
    prepare_input,
)

Prepared = tuple[ObjectResult, "tuple[ImageSent, Path | None] | None"]


class PreparationFailed(Exception):
    """An input the host could not prepare: the object fails alone (its result already says why)."""


def run_pipelined(
    worker: InstantMeshWorker,
    todo: Sequence[tuple[ObjectInput, ObjectOutputs]],
    settings: Settings,
    printer: ProgressPrinter,
    on_result: Callable[[int, ObjectResult], None],
) -> None:
    """Every object of ``todo``; ``on_result(position, result)`` in input order as each finishes."""
    tally = ObjectTally(len(todo), lambda counted: printer.status(counted.line()))
    start = 0
    try:
        while start < len(todo):
            prepared: dict[int, Prepared] = {}
            try:
                for position, result in _map(worker, todo, start, settings, printer, prepared, tally):
                    on_result(position, result)
                    start = position + 1
            except WorkerCrashed as exc:  # the objects it held fail; the rest go to the restarted worker
                for position in sorted(prepared):
                    result, _ = _forget(prepared, position)
                    result.error = result.error or describe_failure(exc)
                    tally.finished(result.name, False)
                    on_result(position, result)
                    start = position + 1
            finally:
                for position in list(prepared):
                    _forget(prepared, position)
    finally:
        printer.end_status()


def _map(
    worker: InstantMeshWorker,
    todo: Sequence[tuple[ObjectInput, ObjectOutputs]],
    start: int,
    settings: Settings,
    printer: ProgressPrinter,
    prepared: dict[int, Prepared],
    tally: ObjectTally,
) -> Iterator[tuple[int, ObjectResult]]:
    def inputs() -> Iterator[ImageSent | BaseException]:
        for position in range(start, len(todo)):
            item, outputs = todo[position]
            result = ObjectResult(item.name, item.image, "failed")
            ready = prepare_input(item, settings, outputs, printer, result)
            prepared[position] = (result, ready)
            yield ready[0] if ready is not None else PreparationFailed(result.error)

    targets = [ObjectTarget(item.name, outputs.mesh, outputs.grid) for item, outputs in todo[start:]]
    # The grids are always rewritten: an object is (re)done only when its mesh is missing, so a grid found is debris.
    for outcome in map_objects(
        worker,
        inputs(),
        targets,
        settings.views,
        settings.mesh,
        overwrite=settings.overwrite,
        overwrite_grids=True,
        tally=tally,
    ):
        position = start + outcome.index
        result, ready = prepared.pop(position)
        item, outputs = todo[position]
        if outcome.mesh is not None and ready is not None:
            result.views_s = outcome.views_timings.get("total_s")
            result.mesh_s = outcome.mesh.timings.get("total_s")
            finish_object(result, item, settings, outputs, ready[1], outcome.mesh, outcome.grid_path)
        elif ready is not None:
            drop_staged(ready[1])
            result.error = outcome.error
        yield position, result


def _forget(prepared: dict[int, Prepared], position: int) -> Prepared:
    """Takes an unfinished object out of the books, removing its staged input."""
    result, ready = prepared.pop(position)
    if ready is not None:
        drop_staged(ready[1])
    return result, ready
