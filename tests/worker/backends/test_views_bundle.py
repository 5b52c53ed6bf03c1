"""The views from AOTInductor packages, on the real tiny backend (CPU, no CUDA graphs): the first start loads the
modules and builds every package (step at two batch sizes, decoder, encoder, image embedding) and writes the views
bundle; the next start runs from the bundle alone, with neither diffusers nor transformers imported, and gives
the same views bit for bit. A bundle that no longer matches its code, sources or constants is not used."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instantmesh.zero123plus.networks import ahead_of_time
from instantmesh.zero123plus.networks.ahead_of_time import PackageUnavailable, ahead_of_time_available
from instantmesh.zero123plus.networks.bundle import CONSTANTS_NAME, MANIFEST_NAME, describe_sources, valid_manifest
from instantmesh.zero123plus.networks.eager import EagerNetworks
from instantmesh.zero123plus.networks.packaged import PACKAGED_PARTS, PackagedNetworks, PackageSetup
from rpcworker.backends import views_loading
from rpcworker.backends.base import SilentContext
from rpcworker.backends.instantmesh import InstantMeshBackend, resolve_model_files
from rpcworker.backends.model_files import ModelFiles
from rpcworker.backends.views_compile import views_code_fingerprint
from rpcworker.backends.views_loading import ViewsLoad
from rpcworker.options import WorkerOptions

pytestmark = [
    pytest.mark.models,
    pytest.mark.upstream,
    pytest.mark.skipif(not ahead_of_time_available(), reason="this torch has no AOTInductor packages"),
]
CPU = torch.device("cpu")
BATCHES = (1, 2)
STEPS = 2
REPO = Path(__file__).resolve().parents[3]


@dataclass
class Start:
    backend: InstantMeshBackend
    phases: dict[str, float]
    messages: list[str]


def tiny_files() -> ModelFiles:
    return resolve_model_files(WorkerOptions(preset="tiny"))


def start(files: ModelFiles, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Start:
    """One worker start of the views with the compile option as on CUDA, its packages in `folder` (on the CPU)."""
    setup = PackageSetup(folder, CPU, cuda_graphs=False, fingerprint=views_code_fingerprint())
    monkeypatch.setattr(views_loading, "compiled_ahead_of_time", lambda cache, device: setup)
    monkeypatch.setattr(views_loading, "compile_cache_for", lambda *args: (folder.parent, {}))
    monkeypatch.setattr(views_loading, "use_compile_cache_at", lambda cache, key: True)
    backend = InstantMeshBackend(files, "cpu", (), max_batch=BATCHES[-1])
    phases: dict[str, float] = {}
    messages: list[str] = []
    load = ViewsLoad(files, CPU, torch.float32, ("compile",), BATCHES, phases, lambda: None, gc.collect)
    backend._pipeline = load.run(messages.append)
    return Start(backend, phases, messages)


@pytest.fixture(scope="module")
def starts(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Start, Start, Path]]:
    """A first start (builds, writes the bundle) and a second (from the bundle) on one packages folder."""
    folder = tmp_path_factory.mktemp("compile") / "packages"
    with pytest.MonkeyPatch.context() as monkeypatch:
        first = start(tiny_files(), folder, monkeypatch)
        second = start(tiny_files(), folder, monkeypatch)
        yield first, second, folder


def grid(views: object) -> np.ndarray:
    return np.asarray(views.grid, dtype=np.int16)  # type: ignore[attr-defined]


def alone(backend: InstantMeshBackend, picture: Image.Image, seed: int = 5) -> np.ndarray:
    return grid(backend.generate_views(picture, seed, STEPS, 4.0, SilentContext()))


def test_the_packaged_views_equal_eager_alone_and_in_a_batch(starts, object_png: Path) -> None:
    first, _, _ = starts
    image = Image.open(object_png)
    mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    eager = InstantMeshBackend(tiny_files(), "cpu", ())
    expected = [alone(eager, image), alone(eager, mirrored, 6)]
    networks = first.backend._pipeline.networks
    assert isinstance(networks, PackagedNetworks)
    assert {prefix: [name.split("-")[0] for name in part.built] for prefix, part in networks.parts.items()} == {
        "reference": ["reference"] * 2,  # each of the step's passes, one per batch size
        "main": ["main"] * 2,
        "decode": ["decode"],
        "encode": ["encode"],
        "image": ["image"],
    }
    assert np.abs(alone(first.backend, image) - expected[0]).max() <= 1
    batch = first.backend.generate_views_batch(
        [image, mirrored], [5, 6], STEPS, 4.0, [SilentContext(), SilentContext()]
    )
    assert all(np.abs(grid(got) - want).max() <= 1 for got, want in zip(batch, expected, strict=True))


def test_the_first_start_writes_the_bundle_and_the_second_runs_from_it(starts, object_png: Path) -> None:
    first, second, folder = starts
    assert (
        "views_bundle_write_s" in first.phases
        and (folder / MANIFEST_NAME).is_file()
        and (folder / CONSTANTS_NAME).is_file()
    )
    assert first.messages[-1] == "views: writing the packaged start for the next one"
    assert second.messages == ["views: starting from the compiled packages"]
    assert {
        "views_bundle_check_s",
        "views_bundle_read_s",
        "reference_package_load_s",
        "main_package_load_s",
        "image_package_first_call_s",
    } <= set(second.phases)
    assert (
        "read_imports_s" not in second.phases and "views_bundle_write_s" not in second.phases
    )  # no module loaded, nothing rewritten
    from safetensors import safe_open

    with safe_open(str(folder / CONSTANTS_NAME), "pt") as constants:  # the step's two passes share one copy of the UNet
        groups = {key.split("/")[0] for key in constants.keys()}  # noqa: SIM118 - safe_open is not iterable
    assert groups == {"step", "decode", "encode", "image", "prompt"}
    networks = second.backend._pipeline.networks
    assert isinstance(networks, PackagedNetworks)
    parts = networks.parts
    assert set(parts) == set(PACKAGED_PARTS) and all(
        part.module is None and part.built == [] for part in parts.values()
    )
    image = Image.open(object_png)
    assert np.array_equal(alone(second.backend, image), alone(first.backend, image))
    both = [second.backend, first.backend]
    batches = [
        b.generate_views_batch([image, image], [5, 9], STEPS, 4.0, [SilentContext(), SilentContext()]) for b in both
    ]
    assert all(np.array_equal(grid(a), grid(b)) for a, b in zip(*batches, strict=True))


CHILD = """
import json, sys, numpy as np, torch
from pathlib import Path
from PIL import Image
from instantmesh.zero123plus.networks.packaged import PackageSetup
from rpcworker.backends.base import SilentContext
from rpcworker.backends.instantmesh import InstantMeshBackend
from rpcworker.backends.views_compile import views_code_fingerprint
from tests.worker.backends.test_views_bundle import BATCHES, STEPS, tiny_files
files = tiny_files()
setup = PackageSetup(Path(sys.argv[1]), torch.device("cpu"), cuda_graphs=False, fingerprint=views_code_fingerprint())
backend = InstantMeshBackend(files, "cpu", (), max_batch=BATCHES[-1])
from rpcworker.backends.views_loading import ViewsLoad
backend._pipeline = ViewsLoad(files, torch.device("cpu"), torch.float32, ("compile",), BATCHES, {}, lambda: None, backend._free).from_bundle(setup, print)
backend.load(["mesh"], SilentContext())
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"diffusers", "transformers"} | {"torch._dynamo", "torch._inductor"} & set(sys.modules))
views = backend.generate_views(Image.open(sys.argv[2]), 5, STEPS, 4.0, SilentContext())
np.save(sys.argv[3], np.asarray(views.grid, dtype=np.int16))
print(json.dumps(heavy))
"""


def test_a_start_from_the_bundle_imports_neither_diffusers_nor_transformers(
    starts, object_png: Path, tmp_path: Path
) -> None:
    """Nor the compilers: loading packages needs no Inductor, and the LRM's build on the meta device no dynamo."""
    first, _, folder = starts
    out = tmp_path / "views.npy"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(object_png), str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    assert np.array_equal(np.load(out), alone(first.backend, Image.open(object_png)))


def test_a_bundle_that_no_longer_matches_is_not_used(starts, tmp_path: Path) -> None:
    """Other code, changed weights, a damaged constants file: each makes the bundle invalid (the modules load and
    write it again); the bundle itself is left as it was."""
    _, _, folder = starts
    files = tiny_files()
    sources = describe_sources(files.zero123plus, files.whitebg_unet)
    fingerprint = views_code_fingerprint()
    assert valid_manifest(folder, sources, fingerprint, torch.float32) is not None
    assert valid_manifest(folder, sources, fingerprint + "x", torch.float32) is None
    assert valid_manifest(folder, sources, fingerprint, torch.float16) is None
    touched = [
        s if s.path != str(files.whitebg_unet.resolve()) else type(s)(s.path, s.size, s.mtime_ns + 1, s.inode)
        for s in sources
    ]
    assert valid_manifest(folder, touched, fingerprint, torch.float32) is None
    copy = tmp_path / "bundle"
    copy.mkdir()
    for name in (MANIFEST_NAME, CONSTANTS_NAME):
        (copy / name).write_bytes((folder / name).read_bytes())
    assert valid_manifest(copy, sources, fingerprint, torch.float32) is not None
    with (copy / CONSTANTS_NAME).open("r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\xff\xff\xff\xff")  # the last tensor's bytes: the sampled hash sees them
    assert valid_manifest(copy, sources, fingerprint, torch.float32) is None
    with (copy / CONSTANTS_NAME).open("r+b") as f:
        f.truncate(100)
    assert valid_manifest(copy, sources, fingerprint, torch.float32) is None
    (copy / MANIFEST_NAME).write_text("{")
    assert valid_manifest(copy, sources, fingerprint, torch.float32) is None


def test_a_bundle_for_smaller_batches_is_not_used_and_one_that_lost_a_package_falls_back_to_the_modules(
    starts, tmp_path: Path
) -> None:
    """The bundle's step ran at batches of 1 and 2. A start for batches of 1 and 3 does not use it, loading nothing of
    it; for one object alone it does. A package its manifest names that has gone is met at the warm-up: that start
    loads the modules (and would build the package), it does not fail."""
    _, _, folder = starts
    setup = PackageSetup(folder, CPU, cuda_graphs=False, fingerprint=views_code_fingerprint())
    messages: list[str] = []
    larger = ViewsLoad(tiny_files(), CPU, torch.float32, ("compile",), (1, 3), {}, lambda: None, gc.collect)
    assert larger.from_bundle(setup, messages.append) is None and messages == []
    assert larger.for_batch_sizes([1]).from_bundle(setup, messages.append) is not None
    assert messages == ["views: starting from the compiled packages"]
    copy = tmp_path / "packages"
    shutil.copytree(folder, copy)
    for package in copy.glob("main-*"):
        package.unlink()
    setup = PackageSetup(copy, CPU, cuda_graphs=False, fingerprint=views_code_fingerprint())
    with pytest.raises(PackageUnavailable):  # what the warm-up meets ...
        pipeline = views_loading.views_from_bundle(
            larger.files.zero123plus, larger.files.whitebg_unet, setup, torch.float32, [2], {}
        )
        larger.warm_up(pipeline)
    messages.clear()
    assert larger.for_batch_sizes([1]).from_bundle(setup, messages.append) is None  # ... and the start loads the
    assert messages == ["views: starting from the compiled packages"]  # modules instead


def test_a_pipeline_with_parts_that_are_not_packages_writes_no_bundle(tmp_path: Path, tiny_cache: Path) -> None:
    from rpcworker.backends.views_compile import save_views_bundle

    files = tiny_files()
    load = ViewsLoad(files, CPU, torch.float32, (), BATCHES, {}, lambda: None, gc.collect)
    pipeline = load.read_modules()
    setup = PackageSetup(tmp_path, CPU, cuda_graphs=False)
    assert not save_views_bundle(pipeline, files.zero123plus, files.whitebg_unet, setup, {})
    assert list(tmp_path.iterdir()) == []


def test_packages_that_cannot_run_here_leave_the_views_eager(
    tmp_path: Path, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch, object_png: Path
) -> None:
    """All or nothing: one package that cannot be built gives up the packages, and the views run on the eager
    modules (no bundle written), with eager's views."""

    def failing_build(*args: object) -> None:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(ahead_of_time, "build_package", failing_build)
    started = start(tiny_files(), tmp_path / "packages", monkeypatch)
    assert isinstance(started.backend._pipeline.networks, EagerNetworks)
    assert "views_bundle_write_s" not in started.phases and not (tmp_path / "packages" / MANIFEST_NAME).exists()
    eager = InstantMeshBackend(tiny_files(), "cpu", ())
    image = Image.open(object_png)
    assert np.array_equal(alone(started.backend, image), alone(eager, image))
