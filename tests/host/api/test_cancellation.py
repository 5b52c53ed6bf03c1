"""Cancelling an API call from another thread (``cancellation=``): the worker stops the request, nothing is
written, no later request of the call is sent, and the worker stays warm; a worker that never stops is killed."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from host import Cancellation, InstantMeshWorker, WorkerCrashed
from rpcworker.wire.errors import Cancelled
from rpcworker.wire.messages import ProgressParams

pytestmark = pytest.mark.pipe


def cancel_at_first_step(cancellation: Cancellation, stages: list[str]):
    """A progress callback that cancels the call once its diffusion has started."""

    def on_progress(progress: ProgressParams) -> None:
        stages.append(progress.stage)
        if progress.stage == "diffusion":
            cancellation.cancel()

    return on_progress


def test_image_to_mesh_cancelled_mid_views_writes_nothing_and_sends_no_reconstruct(
    worker_python: Path, object_png: Path, tmp_path: Path
) -> None:
    with InstantMeshWorker(str(worker_python), backend="mock", worker_args=["--mock", "step_delay=0.05"]) as worker:
        served_before = worker.status().requests_served
        cancellation, stages = Cancellation(), []
        with pytest.raises(Cancelled):
            worker.image_to_mesh(
                object_png,
                tmp_path / "out" / "m.obj",
                num_inference_steps=400,
                on_progress=cancel_at_first_step(cancellation, stages),
                cancellation=cancellation,
            )
        assert cancellation.cancelled and "reconstruct" not in stages
        assert not (tmp_path / "out").exists(), "a cancelled call writes nothing"
        # generate_views and this status were served; no reconstruct was ever sent.
        assert worker.status().requests_served == served_before + 2
        mesh = worker.image_to_mesh(object_png, tmp_path / "out" / "m.obj", num_inference_steps=2)
        assert Path(mesh.path).exists(), "the worker stays warm after a cancel"


def test_a_cancellation_cancelled_first_sends_nothing(worker_python: Path, object_png: Path, tmp_path: Path) -> None:
    with InstantMeshWorker(str(worker_python), backend="mock") as worker:
        served_before = worker.status().requests_served
        cancellation = Cancellation()
        cancellation.cancel()
        with pytest.raises(Cancelled, match="generate_views not sent"):
            worker.image_to_mesh(object_png, tmp_path / "m.obj", cancellation=cancellation)
        assert worker.status().requests_served == served_before + 1  # the status call alone


def test_a_worker_that_ignores_the_cancel_is_killed_after_the_grace(worker_python: Path, object_png: Path) -> None:
    """hang_on: the mock never checks for cancel; the client kills it after its cancel grace, as for a timeout."""
    with InstantMeshWorker(
        str(worker_python), backend="mock", worker_args=["--mock", "hang_on=generate_views"]
    ) as worker:
        worker.client.cancel_grace = 0.5
        worker.load()  # no load progress, no cancel check before the hang
        cancellation = Cancellation()

        def cancel_once_hanging() -> None:
            deadline = time.monotonic() + 30
            while worker.status().busy != "generate_views" and time.monotonic() < deadline:
                time.sleep(0.02)
            cancellation.cancel()

        canceller = threading.Thread(target=cancel_once_hanging)
        canceller.start()
        try:
            with pytest.raises(WorkerCrashed, match="did not stop within 0.5 s of its cancel"):
                worker.generate_views(object_png, cancellation=cancellation, timeout=60)
        finally:
            canceller.join(60)
