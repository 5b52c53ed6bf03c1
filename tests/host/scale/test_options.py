"""One ViewOptions/MeshOptions set on every face: the worker, the pool and the CLI take the same options,
the guidance reaches the worker through each of them, and a bad value is one line before any request."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from host import InstantMeshWorker, InvalidParams, MeshOptions, PrepareOptions, ViewOptions, WorkerPool
from host.api.options import view_options_of

pytestmark = pytest.mark.pool

MAP_OPTIONS = {
    "format",
    "save_grids",
    "names",
    "seed",
    "num_inference_steps",
    "guidance_scale",
    "texture_map",
    "orientation",
    "view_options",
    "mesh_options",
    "overwrite",
    "timeout",
    "prepare",
    "prepare_options",
}
"""The keywords every face's map takes (host.scale.ray.map_images too: tests/host/scale/test_ray.py checks it)."""
OBJECT_OPTIONS = {
    "seed",
    "num_inference_steps",
    "guidance_scale",
    "format",
    "texture_map",
    "orientation",
    "view_options",
    "mesh_options",
    "prepare",
    "prepare_options",
}
"""The option keywords of image_to_mesh, on the worker and on the pool."""


def keywords(function: object) -> set[str]:
    return {name for name, p in inspect.signature(function).parameters.items() if p.kind is p.KEYWORD_ONLY}  # type: ignore[arg-type]


def test_the_worker_and_the_pool_take_the_same_options() -> None:
    for method in ("generate_views", "reconstruct", "image_to_mesh", "map"):
        assert keywords(getattr(WorkerPool, method)) == keywords(getattr(InstantMeshWorker, method)), method
    assert keywords(InstantMeshWorker.map) >= MAP_OPTIONS
    assert keywords(InstantMeshWorker.image_to_mesh) >= OBJECT_OPTIONS


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda w, image, out: w.generate_views(image, num_inference_steps=0), "$.num_inference_steps"),
        (lambda w, image, out: w.generate_views(image, view_options=ViewOptions(seed=-1)), "$.seed"),
        (lambda w, image, out: w.reconstruct(out / "views.png", out / "m.obj", format="stl"), "$.format"),
        (lambda w, image, out: w.image_to_mesh(image, out / "m.obj", guidance_scale=1e9), "$.guidance_scale"),
        (
            lambda w, image, out: w.map([image], out, mesh_options=MeshOptions(orientation="upside-down")),
            "$.orientation",
        ),  # type: ignore[arg-type]
        (
            lambda w, image, out: w.generate_views(image, prepare_options=PrepareOptions(foreground_ratio=0.0)),
            "$.foreground_ratio",
        ),
    ],
)
def test_a_bad_value_is_one_line_before_the_worker_starts(call, field: str, tmp_path: Path) -> None:
    """The worker's python does not exist: reaching it would raise WorkerStartError, so the refusal is the host's."""
    worker = InstantMeshWorker(str(tmp_path / "no-such-python"))
    with pytest.raises(InvalidParams) as refused:
        call(worker, tmp_path / "image.png", tmp_path)
    assert field in refused.value.message and "\n" not in str(refused.value)
    assert worker.client.process is None


def test_the_pools_map_refuses_a_bad_value_when_called(make_pool, object_png: Path, tmp_path: Path) -> None:
    """Before the first outcome is asked for, and with no request sent."""
    pool = make_pool(workers=1)
    with pytest.raises(InvalidParams, match=r"\$\.num_inference_steps"):
        pool.map([object_png], tmp_path, num_inference_steps=1001)
    assert pool.status()[0].requests_done == 0


def test_keywords_override_the_options_they_name() -> None:
    chosen = view_options_of(ViewOptions(seed=7, guidance_scale=2.0), num_inference_steps=3)
    assert chosen == ViewOptions(seed=7, num_inference_steps=3, guidance_scale=2.0)


def grid_bytes(outcomes: list) -> bytes:
    (outcome,) = outcomes
    assert outcome.ok, outcome.error
    return Path(outcome.grid_path).read_bytes()


def test_guidance_reaches_the_worker_through_every_face(
    make_pool, worker_python: Path, object_png: Path, tmp_path: Path
) -> None:
    """The mock's views are a function of image, seed and guidance: the same guidance gives the same grid on the
    worker and on the pool, as a keyword or in ViewOptions; another guidance gives another grid."""
    pool = make_pool(workers=1)
    common = {"num_inference_steps": 2, "seed": 5}
    no_noise = grid_bytes(list(pool.map([object_png], tmp_path / "pool", guidance_scale=0.0, **common)))
    assert (
        grid_bytes(
            list(
                pool.map(
                    [object_png], tmp_path / "pool-options", view_options=ViewOptions(guidance_scale=0.0, **common)
                )
            )
        )
        == no_noise
    )
    assert grid_bytes(list(pool.map([object_png], tmp_path / "pool-default", **common))) != no_noise
    made = pool.image_to_mesh(
        object_png, tmp_path / "one.obj", save_grid=tmp_path / "one.png", guidance_scale=0.0, **common
    )
    assert made.num_faces > 0 and (tmp_path / "one.png").read_bytes() == no_noise
    with InstantMeshWorker(str(worker_python), backend="mock", worker_args=["--mock", "view_size=64"]) as worker:
        assert grid_bytes(list(worker.map([object_png], tmp_path / "worker", guidance_scale=0.0, **common))) == no_noise
        views = worker.generate_views(
            object_png, view_options=ViewOptions(guidance_scale=0.0, **common), save_grid=tmp_path / "w.png"
        )
        assert Path(views.grid_path or "").read_bytes() == no_noise


def test_mesh_options_reach_the_worker_through_the_pool(make_pool, object_png: Path, tmp_path: Path) -> None:
    """texture_map in MeshOptions gives a textured OBJ (its .mtl and .png); format as a keyword names a .glb."""
    pool = make_pool(workers=1)
    (textured,) = pool.map(
        [object_png], tmp_path / "textured", num_inference_steps=1, mesh_options=MeshOptions(texture_map=True)
    )
    assert textured.ok and textured.mesh is not None
    assert sorted(Path(p).suffix for p in textured.mesh.extra_paths) == [".mtl", ".png"]
    (binary,) = pool.map([object_png], tmp_path / "binary", num_inference_steps=1, format="glb")
    assert binary.ok and binary.mesh is not None and binary.mesh.format == "glb" and binary.mesh.path.endswith(".glb")


def test_an_object_lost_twice_counts_two_attempts(make_pool, object_png: Path, tmp_path: Path) -> None:
    """Every worker stalls on views: the object's outcome is the second worker's RequestTimeout, with attempts 2."""
    pool = make_pool("hang_on=generate_views", workers=2, request_timeout=1.0, cancel_grace=0.5)
    (outcome,) = pool.map([object_png], tmp_path, num_inference_steps=1)
    assert not outcome.ok and outcome.error_code == "RequestTimeout" and outcome.attempts == 2, outcome
