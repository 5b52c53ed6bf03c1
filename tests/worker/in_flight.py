"""How many objects a map keeps in flight, counted on the host's side of the pipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from host import InstantMeshWorker
from host.api.outcome import ObjectOutcome


def most_in_flight(
    worker: InstantMeshWorker, images: list[Path], out: Path, **options: Any
) -> tuple[int, list[ObjectOutcome]]:
    """Runs ``worker.map``, counting each object from its views request until its mesh reply; returns the most
    at once (after checking none is left) and the outcomes."""
    in_flight, most = [0], [0]
    request = worker.client.request

    def counting(method: str, *rest: Any, **kwargs: Any) -> Any:
        call = request(method, *rest, **kwargs)
        if method == "generate_views":  # an object enters the window
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        elif method == "reconstruct":  # ... and leaves it once its mesh is written
            result = call.result

            def leaving(*a: Any, **k: Any) -> Any:
                try:
                    return result(*a, **k)
                finally:
                    in_flight[0] -= 1

            call.result = leaving
        return call

    worker.client.request = counting  # type: ignore[method-assign]
    try:
        outcomes = list(worker.map(images, out, **options))
    finally:
        worker.client.request = request  # type: ignore[method-assign]
    assert in_flight[0] == 0
    return most[0], outcomes
