"""One ``load`` of both models: the mesh loads in a thread beside the views, on the tiny preset (CPU).

Its notification still comes second, the views wait for it before their warm-up, and a failure of either model
leaves the other one loaded and the failure reported.
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from rpcworker.backends import instantmesh as backend_module  # noqa: E402
from rpcworker.backends import views_loading  # noqa: E402
from rpcworker.backends.instantmesh import InstantMeshBackend, resolve_model_files  # noqa: E402
from rpcworker.backends.model_files import ModelFiles  # noqa: E402
from rpcworker.options import WorkerOptions  # noqa: E402
from rpcworker.wire.errors import ModelNotLoaded  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream]


class RecordingContext:
    def __init__(self) -> None:
        self.progress_seen: list[tuple[str, int, int, str]] = []

    def progress(self, stage: str, step: int, total: int, message: str = "") -> None:
        self.progress_seen.append((stage, step, total, message))

    def check_cancelled(self) -> None:
        pass


@pytest.fixture(scope="module")
def files(tiny_cache: Path) -> ModelFiles:
    return resolve_model_files(WorkerOptions(preset="tiny"))


def test_the_mesh_loads_in_its_own_thread_and_the_views_wait_for_it(
    files: ModelFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh_threads: list[str] = []
    views_read, mesh_done = threading.Event(), threading.Event()
    done_at_warm_up: list[bool] = []
    real_load_mesh, real_optimize, real_read = (
        backend_module.load_mesh,
        views_loading.ViewsLoad.optimize,
        views_loading.ViewsLoad.read_modules,
    )

    def load_mesh(*args: Any) -> Any:
        mesh_threads.append(threading.current_thread().name)
        assert views_read.wait(timeout=120)  # the mesh starts once the views are read: only a wait makes it end first
        model = real_load_mesh(*args)
        mesh_done.set()
        return model

    def read_modules(self: views_loading.ViewsLoad) -> Any:
        pipeline = real_read(self)
        views_read.set()
        return pipeline

    def optimize(self: views_loading.ViewsLoad, *args: Any) -> None:
        done_at_warm_up.append(mesh_done.is_set())
        real_optimize(self, *args)

    monkeypatch.setattr(backend_module, "load_mesh", load_mesh)
    monkeypatch.setattr(views_loading.ViewsLoad, "optimize", optimize)
    monkeypatch.setattr(views_loading.ViewsLoad, "read_modules", read_modules)
    backend = InstantMeshBackend(files, "cpu", ())
    ctx = RecordingContext()
    seconds = backend.load(["views", "mesh"], ctx)
    assert (
        backend.loaded() == ["views", "mesh"]
        and set(seconds) == {"views", "mesh"}
        and all(s > 0 for s in seconds.values())
    )
    assert mesh_threads != [threading.current_thread().name] and mesh_threads[0].startswith("mesh-load")
    assert done_at_warm_up == [True]
    assert [(step, message) for stage, step, _, message in ctx.progress_seen if stage == "load"] == [
        (1, "views"),
        (2, "mesh"),
    ]
    assert {"mesh_read_s", "mesh_geometry_s", "views_read_s"} <= set(backend.load_phases)


def test_one_model_alone_or_mesh_first_loads_in_the_calling_thread(
    files: ModelFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []
    real_load_mesh = backend_module.load_mesh
    monkeypatch.setattr(
        backend_module,
        "load_mesh",
        lambda *args: threads.append(threading.current_thread().name) or real_load_mesh(*args),
    )
    backend = InstantMeshBackend(files, "cpu", ())
    backend.load(["mesh", "views"], RecordingContext())
    assert threads == [threading.current_thread().name] and backend.loaded() == ["views", "mesh"]
    backend.unload(["mesh"])
    backend.load(["views", "mesh"], RecordingContext())  # the views are loaded already: nothing beside them
    assert threads == [threading.current_thread().name] * 2


def test_a_mesh_that_cannot_load_beside_the_views_is_reported_and_the_views_stay(
    files: ModelFiles, tmp_path: Path
) -> None:
    backend = InstantMeshBackend(dataclasses.replace(files, lrm=tmp_path / "missing.ckpt"), "cpu", ())
    with pytest.raises(ModelNotLoaded, match="missing.ckpt"):
        backend.load(["views", "mesh"], RecordingContext())
    assert backend.loaded() == ["views"]


def test_views_that_cannot_load_are_reported_and_the_mesh_loaded_beside_them_stays(
    files: ModelFiles, tmp_path: Path
) -> None:
    backend = InstantMeshBackend(dataclasses.replace(files, zero123plus=tmp_path / "no-zero123plus"), "cpu", ())
    with pytest.raises(ModelNotLoaded, match="no-zero123plus"):
        backend.load(["views", "mesh"], RecordingContext())
    assert backend.loaded() == ["mesh"]
