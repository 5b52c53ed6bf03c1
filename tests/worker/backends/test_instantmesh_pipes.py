"""The real InstantMesh backend with the tiny preset, driven through the worker over pipes on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from host import InstantMeshWorker, InvalidParams, WorkerStartError
from tests.conftest import MODELS_PYTHON

pytestmark = [pytest.mark.models, pytest.mark.upstream]


@pytest.fixture(scope="module")
def tiny_worker(tiny_cache: Path):
    with InstantMeshWorker(str(MODELS_PYTHON), preset="tiny", startup_timeout=120) as worker:
        yield worker


def test_views_then_mesh_by_handle_in_every_format(
    tiny_worker: InstantMeshWorker, object_png: Path, tmp_path: Path
) -> None:
    info = tiny_worker.client.info
    assert info.backend == "instantmesh" and info.torch and info.weights == "tiny" and "tiny" in info.model_label
    progress = []
    views = tiny_worker.generate_views(
        object_png,
        num_inference_steps=3,
        save_grid=tmp_path / "grid.png",
        on_progress=lambda p: progress.append(p.stage),
    )
    assert views.weights == "tiny" and "NOT the official" in views.model_label
    assert views.grid_size == (64, 96) and views.view_size == 32 and Path(views.grid_path).stat().st_size > 0
    assert progress.count("diffusion") == 3
    for fmt in ("obj", "glb", "ply"):
        mesh = tiny_worker.reconstruct(views, tmp_path / f"mesh.{fmt}")
        assert mesh.num_vertices > 100 and mesh.num_faces > 100 and mesh.weights == "tiny"
        loaded = trimesh.load(mesh.path, force="mesh", process=False)
        assert len(loaded.faces) == mesh.num_faces
        assert loaded.bounds.ravel().tolist() == pytest.approx(sum(mesh.bounds, []), abs=1e-4)


def test_reconstruct_from_a_saved_grid_matches_the_handle(
    tiny_worker: InstantMeshWorker, object_png: Path, tmp_path: Path
) -> None:
    views = tiny_worker.generate_views(object_png, num_inference_steps=2, seed=3, save_grid=tmp_path / "g.png")
    by_handle = tiny_worker.reconstruct(views, tmp_path / "a.ply")
    by_grid = tiny_worker.reconstruct(tmp_path / "g.png", tmp_path / "b.ply")
    assert (by_handle.num_vertices, by_handle.num_faces) == (by_grid.num_vertices, by_grid.num_faces)


def test_same_seed_same_views(tiny_worker: InstantMeshWorker, object_png: Path, tmp_path: Path) -> None:
    a = tiny_worker.generate_views(object_png, num_inference_steps=2, seed=11, save_grid=tmp_path / "a.png")
    b = tiny_worker.generate_views(object_png, num_inference_steps=2, seed=11, save_grid=tmp_path / "b.png")
    c = tiny_worker.generate_views(object_png, num_inference_steps=2, seed=12, save_grid=tmp_path / "c.png")
    assert Path(a.grid_path).read_bytes() == Path(b.grid_path).read_bytes() != Path(c.grid_path).read_bytes()


def test_texture_map_in_obj_and_glb(tiny_worker: InstantMeshWorker, object_png: Path, tmp_path: Path) -> None:
    """The tiny preset's texture is 64^2 (its infer_config); the OBJ has the plain mesh's vertices and
    faces plus vt/mtl/png, the GLB embeds the texture. (xatlas dominates: ~10 s per call on 2 CPU cores.)"""
    assert "texture_map" in tiny_worker.client.info.capabilities
    views = tiny_worker.generate_views(object_png, num_inference_steps=1)
    plain = tiny_worker.reconstruct(views, tmp_path / "plain.obj")
    obj = tiny_worker.reconstruct(views, tmp_path / "tex.obj", texture_map=True)
    assert obj.extra_paths == [str(tmp_path / "tex.mtl"), str(tmp_path / "tex.png")]
    assert (obj.num_vertices, obj.num_faces, obj.bounds) == (plain.num_vertices, plain.num_faces, plain.bounds)
    lines = Path(obj.path).read_text().splitlines()
    assert lines[0] == "mtllib tex.mtl" and "map_Kd tex.png" in (tmp_path / "tex.mtl").read_text()
    plain_v = [line for line in Path(plain.path).read_text().splitlines() if line.startswith("v ")]
    tex_v = np.array([[float(x) for x in line.split()[1:4]] for line in lines if line.startswith("v ")])
    np.testing.assert_allclose(tex_v, [[float(x) for x in v.split()[1:4]] for v in plain_v], atol=1e-6)
    with Image.open(tmp_path / "tex.png") as png:
        assert png.size == (64, 64) and png.mode == "RGB"
    glb = tiny_worker.reconstruct(views, tmp_path / "tex.glb", texture_map=True)
    assert glb.extra_paths == [] and glb.num_faces == plain.num_faces
    loaded = trimesh.load(glb.path, force="mesh", process=False)
    assert len(loaded.faces) == glb.num_faces and loaded.visual.material.baseColorTexture.size == (64, 64)
    assert loaded.bounds.ravel().tolist() == pytest.approx(sum(glb.bounds, []), abs=1e-4)


def test_texture_map_in_ply_is_refused(tiny_worker: InstantMeshWorker, object_png: Path, tmp_path: Path) -> None:
    views = tiny_worker.generate_views(object_png, num_inference_steps=1)
    with pytest.raises(InvalidParams, match="texture_map needs obj or glb"):
        tiny_worker.reconstruct(views, tmp_path / "t.ply", texture_map=True)
    assert not (tmp_path / "t.ply").exists()


def test_unload_frees_and_reload_works(tiny_worker: InstantMeshWorker, object_png: Path, tmp_path: Path) -> None:
    tiny_worker.unload()
    assert tiny_worker.status().loaded == []
    loaded = tiny_worker.load(["mesh"])
    assert set(loaded.load_seconds) == {"mesh"}
    assert tiny_worker.image_to_mesh(object_png, tmp_path / "m.obj", num_inference_steps=1).num_faces > 0


def test_missing_official_weights_name_every_place_looked(tmp_path: Path) -> None:
    worker = InstantMeshWorker(
        str(MODELS_PYTHON), preset="official", lrm=str(tmp_path / "missing.ckpt"), startup_timeout=120
    )
    with pytest.raises(WorkerStartError) as info:
        worker.start()
    text = str(info.value)
    assert "missing.ckpt" in text and "INSTANTMESH_ZERO123PLUS" in text and "Hugging Face cache" in text


@pytest.mark.needs("torch", (2, 4), "the compiled step needs torch 2.4+ (below, compile is refused at start)")
def test_speed_options_give_the_same_views(tiny_cache: Path, object_png: Path) -> None:
    """No speed option may change results; checked in-process on the tiny preset. The compiled step goes
    through dynamo's eager backend (the same graph capture, without minutes of C++ compilation on CPU), with
    recompiles made errors: a second seed and a second object must reuse the one graph."""
    import numpy as np
    import torch._dynamo
    from PIL import Image

    from instantmesh.zero123plus.networks.compiled import CompiledNetworks
    from rpcworker.backends.base import SilentContext
    from rpcworker.backends.instantmesh import InstantMeshBackend, resolve_model_files
    from rpcworker.options import WorkerOptions

    files = resolve_model_files(WorkerOptions(preset="tiny"))
    image = Image.open(object_png)

    def views(backend: InstantMeshBackend, seed: int = 5) -> np.ndarray:
        return np.asarray(backend.generate_views(image, seed, 2, 4.0, SilentContext()).grid, dtype=np.int16)

    eager = InstantMeshBackend(files, "cpu", ())
    expected = views(eager)
    assert np.abs(views(InstantMeshBackend(files, "cpu", ("channels_last",))) - expected).max() <= 2
    backend = InstantMeshBackend(files, "cpu", ())
    backend.load(["views"], SilentContext())
    backend._pipeline.use(CompiledNetworks(backend._pipeline.networks, backend="eager", mode=None))
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert np.array_equal(views(backend), expected)
        assert np.array_equal(views(backend, seed=6), views(eager, seed=6))
        flipped = np.ascontiguousarray(np.asarray(image)[:, ::-1])
        a = backend.generate_views(Image.fromarray(flipped), 5, 2, 4.0, SilentContext()).grid
        b = eager.generate_views(Image.fromarray(flipped), 5, 2, 4.0, SilentContext()).grid
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # another guidance setting halves the rows: they run padded to the compiled batch, not recompiled
    with torch._dynamo.config.patch(error_on_recompile=True):
        backend.generate_views(image, 5, 2, 1.0, SilentContext())


def test_options_that_cannot_work_are_refused_at_start(tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from rpcworker.backends.instantmesh import InstantMeshBackend, resolve_model_files
    from rpcworker.options import WorkerOptions

    files = resolve_model_files(WorkerOptions(preset="tiny"))
    with pytest.raises(ValueError, match="unknown optimization"):
        InstantMeshBackend(files, "cpu", ("turbo",))
    with pytest.raises(ValueError, match="unknown optimization"):
        InstantMeshBackend(files, "cpu", ("fused_qkv",))  # removed: it lost on the H200
    monkeypatch.setattr(torch, "__version__", "2.11.0")  # past the version check, whatever this env has
    with pytest.raises(ValueError, match="for CUDA devices"):
        InstantMeshBackend(files, "cpu", ("compile",))
    monkeypatch.setattr(torch, "__version__", "2.1.0")
    with pytest.raises(ValueError, match=r"needs torch >= 2\.4 \(found 2\.1\.0\)"):
        InstantMeshBackend(files, "cpu", ("compile",))


@pytest.mark.needs("torch", (2, 4), "the compiled step needs torch 2.4+ (below, compile is refused at start)")
def test_compiled_step_serves_every_batch_size_without_recompiling(tiny_cache: Path, object_png: Path) -> None:
    """With --max-batch 3 the step is compiled for one object and for three (at load); a batch of two runs
    padded to three rows' worth, never compiling inside a request. Dynamo's eager backend, as above."""
    import torch._dynamo

    from instantmesh.zero123plus.networks.compiled import CompiledNetworks
    from rpcworker.backends.base import SilentContext
    from rpcworker.backends.instantmesh import InstantMeshBackend, resolve_model_files
    from rpcworker.options import WorkerOptions

    files = resolve_model_files(WorkerOptions(preset="tiny"))
    image = Image.open(object_png)
    eager = InstantMeshBackend(files, "cpu", ())
    backend = InstantMeshBackend(files, "cpu", (), max_batch=3)
    backend.load(["views"], SilentContext())
    load = backend.views_load()
    assert load.row_counts() == [2, 6]
    torch._dynamo.reset()
    pipeline = backend._pipeline
    pipeline.use(CompiledNetworks(pipeline.networks, load.row_counts(), backend="eager", mode=None))
    load.warm_up(backend._pipeline)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seeds in ([1, 2], [3], [4, 5, 6]):
            batch = backend.generate_views_batch([image] * len(seeds), seeds, 2, 4.0, [SilentContext()] * len(seeds))
            for seed, views in zip(seeds, batch, strict=True):
                alone = eager.generate_views(image, seed, 2, 4.0, SilentContext())
                assert np.abs(np.asarray(views.grid, np.int16) - np.asarray(alone.grid, np.int16)).max() <= 1


def test_a_batching_worker_gives_each_object_its_alone_views(
    tiny_cache: Path, object_png: Path, tmp_path: Path
) -> None:
    args = ("--max-batch", "3", "--batch-wait-ms", "1000")
    with InstantMeshWorker(str(MODELS_PYTHON), preset="tiny", startup_timeout=120, worker_args=args) as worker:
        assert worker.client.status().max_batch == 3
        alone = [
            worker.generate_views(object_png, seed=s, num_inference_steps=2, save_grid=tmp_path / f"a{s}.png")
            for s in (1, 2)
        ]
        many = worker.generate_views_many(
            [object_png, tmp_path / "missing.png", object_png],
            seeds=[1, 7, 2],
            num_inference_steps=2,
            save_grids=[tmp_path / f"b{i}.png" for i in range(3)],
        )
        assert not hasattr(many[1], "handle")
        for one, batched in zip(alone, (many[0], many[2]), strict=True):
            assert batched.timings["batch_size"] == 2
            a = np.asarray(Image.open(one.grid_path), np.int16)
            b = np.asarray(Image.open(batched.grid_path), np.int16)
            assert np.abs(a - b).max() <= 1
        mesh = worker.reconstruct(many[2], tmp_path / "m.ply")
        assert mesh.num_faces > 0


def test_warm_up_times_each_step(tiny_cache: Path) -> None:
    """The compile warm-up reports one phase per step (the first: trace and compile; later: CUDA-graph runs)."""
    from rpcworker.backends.instantmesh import InstantMeshBackend, resolve_model_files
    from rpcworker.backends.views_compile import WARMUP_DECODE_PHASE, WARMUP_STEPS, warmup_phase
    from rpcworker.options import WorkerOptions

    files = resolve_model_files(WorkerOptions(preset="tiny"))
    backend = InstantMeshBackend(files, "cpu", ())
    load = backend.views_load()
    load.warm_up(load.read_modules())
    names = [warmup_phase(step) for step in range(1, WARMUP_STEPS + 1)]
    assert len(set(names)) == WARMUP_STEPS and all(backend.load_phases[name] >= 0 for name in names)
    assert backend.load_phases[WARMUP_DECODE_PHASE] > 0  # and one decode, which compiles the VAE decoder


def test_the_mesh_lane_gives_the_meshes_the_executor_gives(
    tiny_worker: InstantMeshWorker, tiny_cache: Path, object_png: Path, tmp_path: Path
) -> None:
    """reconstruct on the mesh lane (beside the next objects' diffusion) writes the same files as on the executor."""
    options = {"num_inference_steps": 2, "format": "ply"}
    serial = list(tiny_worker.map([object_png] * 3, tmp_path / "serial", **options))
    with InstantMeshWorker(
        str(MODELS_PYTHON), preset="tiny", startup_timeout=120, worker_args=("--mesh-lane", "on")
    ) as worker:
        assert worker.client.status().mesh_lane and not tiny_worker.client.status().mesh_lane
        laned = list(worker.map([object_png] * 3, tmp_path / "lane", **options))
    assert all(o.ok for o in serial + laned)
    assert [Path(o.mesh.path).read_bytes() for o in laned] == [Path(o.mesh.path).read_bytes() for o in serial]
