"""The model methods (rpcworker/handlers.py) on the mock backend, called the way the job queue calls them:
params already decoded, one context per request, a Deferred whose ``finish`` writes the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from rpcworker.backends.base import GeneratedViews
from rpcworker.backends.mock import MockBackend, MockOptions
from rpcworker.handlers import BATCH_HANDLERS, MODEL_HANDLERS, Workspace
from rpcworker.handles import ViewStore
from rpcworker.job import Deferred, Job, JobContext
from rpcworker.outputs import OutputPolicy
from rpcworker.wire.errors import Cancelled, HandleExpired, InputNotFound, InternalError, InvalidParams, OutputRefused
from rpcworker.wire.messages import (
    GenerateViewsParams,
    ImagePath,
    LoadParams,
    MeshResult,
    ReconstructParams,
    UnloadParams,
    ViewsGridPath,
    ViewsHandle,
    ViewsResult,
)

VIEW_SIZE = 16


def context(
    method: str = "generate_views", sent: list[msgspec.Struct] | None = None, *, cancelled: bool = False
) -> JobContext:
    """A request's context as the job queue makes it; its notifications go to ``sent``."""
    job = Job(1, method, None, lambda params, ctx: None)
    if cancelled:
        job.cancelled.set()
    return JobContext(job, (sent if sent is not None else []).append)


def finished(outcome: Any) -> Any:
    """The reply a handler's outcome becomes once the finisher has run its deferred part."""
    return outcome.finish() if isinstance(outcome, Deferred) else outcome


@pytest.fixture()
def ws(tmp_path: Path) -> Workspace:
    return Workspace(MockBackend(MockOptions(view_size=VIEW_SIZE)), ViewStore(4), OutputPolicy(str(tmp_path)))


def views(ws: Workspace, image: Path, out: Path | None = None, **options: Any) -> ViewsResult:
    params = GenerateViewsParams(ImagePath(str(image)), output_path=None if out is None else str(out), **options)
    return finished(MODEL_HANDLERS["generate_views"](ws, params, context()))


def test_every_model_method_has_a_handler() -> None:
    assert set(MODEL_HANDLERS) == {"load", "unload", "generate_views", "reconstruct"}
    assert set(BATCH_HANDLERS) <= set(MODEL_HANDLERS)


def test_load_names_each_model_once_and_unloading_the_views_expires_their_handles(
    ws: Workspace, object_png: Path
) -> None:
    loaded = MODEL_HANDLERS["load"](ws, LoadParams(["views", "views"]), context("load"))
    assert loaded.loaded == ["views"] and list(loaded.load_seconds) == ["views"]
    handle = views(ws, object_png).handle
    MODEL_HANDLERS["unload"](ws, UnloadParams(["mesh"]), context("unload"))
    ws.views.get(handle)  # the views survive unloading the other model
    unloaded = MODEL_HANDLERS["unload"](ws, UnloadParams(["views"]), context("unload"))
    assert "views" in unloaded.unloaded and "views" not in unloaded.loaded
    with pytest.raises(HandleExpired):
        ws.views.get(handle)


def test_generate_views_writes_the_grid_only_in_its_deferred_part(
    ws: Workspace, object_png: Path, tmp_path: Path
) -> None:
    out = tmp_path / "grid.png"
    sent: list[msgspec.Struct] = []
    params = GenerateViewsParams(ImagePath(str(object_png)), num_inference_steps=3, seed=7, output_path=str(out))
    outcome = MODEL_HANDLERS["generate_views"](ws, params, context(sent=sent))
    assert isinstance(outcome, Deferred) and not out.exists()
    assert [(n.params.stage, n.params.step) for n in sent][-3:] == [
        ("diffusion", 1),
        ("diffusion", 2),
        ("diffusion", 3),
    ]  # type: ignore[attr-defined]
    result = outcome.finish()
    assert out.is_file() and result.grid_path == str(out)
    assert (result.grid_width, result.grid_height, result.view_size) == (2 * VIEW_SIZE, 3 * VIEW_SIZE, VIEW_SIZE)
    assert (result.seed, result.num_inference_steps, result.timings["batch_size"]) == (7, 3, 1.0)
    ws.views.get(result.handle)


def test_generate_views_checks_its_output_before_reading_its_input(ws: Workspace, tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    with pytest.raises(InvalidParams, match="must end in .png"):
        views(ws, missing, tmp_path / "grid.jpg")
    (tmp_path / "taken.png").write_bytes(b"x")
    with pytest.raises(OutputRefused):
        views(ws, missing, tmp_path / "taken.png")
    with pytest.raises(InputNotFound):
        views(ws, missing, tmp_path / "free.png")


def test_reconstruct_from_a_handle_or_a_grid_file(ws: Workspace, object_png: Path, tmp_path: Path) -> None:
    made = views(ws, object_png, tmp_path / "grid.png")
    from_handle = finished(
        MODEL_HANDLERS["reconstruct"](
            ws, ReconstructParams(ViewsHandle(made.handle), str(tmp_path / "a.obj")), context("reconstruct")
        )
    )
    from_grid = finished(
        MODEL_HANDLERS["reconstruct"](
            ws,
            ReconstructParams(ViewsGridPath(str(tmp_path / "grid.png")), str(tmp_path / "b.ply")),
            context("reconstruct"),
        )
    )
    assert isinstance(from_handle, MeshResult) and from_handle.format == "obj" and (tmp_path / "a.obj").is_file()
    assert from_grid.format == "ply" and (tmp_path / "b.ply").is_file()
    assert (from_grid.num_vertices, from_grid.num_faces) == (from_handle.num_vertices, from_handle.num_faces)


def test_reconstruct_refuses_a_backend_that_ignores_texture_map(
    ws: Workspace, object_png: Path, tmp_path: Path
) -> None:
    class Untextured(MockBackend):
        def reconstruct(self, views: Any, texture_map: bool, ctx: Any) -> Any:
            return super().reconstruct(views, False, ctx)

    ws.backend = Untextured(MockOptions(view_size=VIEW_SIZE))
    handle = views(ws, object_png).handle
    params = ReconstructParams(ViewsHandle(handle), str(tmp_path / "t.obj"), texture_map=True)
    with pytest.raises(InternalError, match="without a texture map"):
        MODEL_HANDLERS["reconstruct"](ws, params, context("reconstruct"))
    assert not list(tmp_path.glob("t.*"))


def test_requests_share_a_batch_only_with_the_same_steps_and_guidance(object_png: Path) -> None:
    key, _ = BATCH_HANDLERS["generate_views"]
    image = ImagePath(str(object_png))
    assert key(GenerateViewsParams(image, seed=1)) == key(GenerateViewsParams(image, seed=2, output_path="x.png"))
    assert key(GenerateViewsParams(image, num_inference_steps=3)) != key(
        GenerateViewsParams(image, num_inference_steps=4)
    )
    assert key(GenerateViewsParams(image, guidance_scale=3.0)) != key(GenerateViewsParams(image, guidance_scale=4.0))


def test_a_batch_drops_a_bad_or_cancelled_request_alone(ws: Workspace, object_png: Path, tmp_path: Path) -> None:
    _, run_batch = BATCH_HANDLERS["generate_views"]
    batch = [
        GenerateViewsParams(ImagePath(str(object_png)), seed=1),
        GenerateViewsParams(ImagePath(str(tmp_path / "missing.png"))),
        GenerateViewsParams(ImagePath(str(object_png)), seed=2),
        GenerateViewsParams(ImagePath(str(object_png)), seed=3),
    ]
    ctxs = [context(), context(), context(), context(cancelled=True)]
    outcomes = [finished(outcome) for outcome in run_batch(ws, batch, ctxs)]
    assert isinstance(outcomes[1], InputNotFound) and isinstance(outcomes[3], Cancelled)
    first, second = outcomes[0], outcomes[2]
    assert (first.seed, second.seed) == (1, 2) and first.timings["batch_size"] == second.timings["batch_size"] == 2.0
    alone = views(ws, object_png, seed=2)
    assert ws.views.get(second.handle)[0].tobytes() == ws.views.get(alone.handle)[0].tobytes()


def test_a_batch_refuses_a_backend_that_loses_results(ws: Workspace, object_png: Path) -> None:
    class Lossy(MockBackend):
        def generate_views_batch(self, *args: Any) -> list[GeneratedViews | BaseException]:
            return super().generate_views_batch(*args)[:-1]

    ws.backend = Lossy(MockOptions(view_size=VIEW_SIZE))
    _, run_batch = BATCH_HANDLERS["generate_views"]
    batch = [GenerateViewsParams(ImagePath(str(object_png)), seed=seed) for seed in (1, 2)]
    with pytest.raises(InternalError, match="returned 1 results for a batch of 2"):
        run_batch(ws, batch, [context(), context()])
