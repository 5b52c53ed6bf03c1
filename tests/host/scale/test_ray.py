"""host.scale.ray on a local Ray cluster (two CPUs) with mock-backed actors: meshes, a failing object, no orphans."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.faults.conftest import wait_gone

pytestmark = pytest.mark.pool

ray = pytest.importorskip("ray", reason="no ray here; test_ray_in_host_env.py runs this file in the host env")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local cluster for the whole session; its processes import this checkout."""
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}}
    )
    yield
    ray.shutdown()


def test_importing_host_does_not_import_ray(tmp_path: Path) -> None:
    """The host stays msgspec-only: ``import host`` (and host.scale.pool) leaves ray unimported."""
    import subprocess
    import sys

    probe = "import sys, host, host.scale.pool; print('ray' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_map_images_over_two_actors_lists_the_failing_object(
    ray_cluster: None, worker_python: Path, object_png: Path, tmp_path: Path
) -> None:
    """Four good images and a missing one over two mock-backed actors: four meshes on disk, the missing one
    listed as failed with input_not_found (not raised), both actors used, and their workers gone afterwards."""
    from host.scale.ray import map_images

    images = [object_png, object_png, tmp_path / "missing.png", object_png, object_png]
    report = map_images(
        images,
        tmp_path / "out",
        actors=2,
        num_gpus=0,
        python=str(worker_python),
        backend="mock",
        worker_args=["--mock", "view_size=64,step_delay=0.05"],
        num_inference_steps=4,
        startup_timeout=60,
    )
    assert [o.index for o in report.outcomes] == [0, 1, 2, 3, 4]
    assert [o.ok for o in report.outcomes] == [True, True, False, True, True]
    failed = report.failures
    assert len(failed) == 1 and failed[0].name == "missing" and failed[0].error_code == "input_not_found"
    for outcome in report.outcomes:
        if outcome.ok:
            assert outcome.mesh is not None and Path(outcome.mesh.path).is_file()
            assert outcome.grid_path is not None and Path(outcome.grid_path).is_file()
    assert len({o.worker for o in report.outcomes}) == 2
    assert len(report.actors) == 2
    for actor in report.actors:
        assert actor["model_label"].startswith("mock")
        assert wait_gone(actor["worker_pid"], 10.0), f"actor's worker {actor['worker_pid']} outlived map_images"


NEXT_VIEWS_STARTED_S = 0.4


def test_an_actors_worker_killed_mid_object_is_redone_once(
    ray_cluster: None, worker_python: Path, object_png: Path, tmp_path: Path
) -> None:
    """SIGKILL of one actor's stdio worker while it makes views: that object is redone (attempts 2), every
    object ends ok, and the actors keep the workers they restart until stop_actors."""
    import os
    import signal
    import threading

    from host.scale.ray import map_images, start_actors, stop_actors

    actors = start_actors(
        2,
        num_gpus=0,
        python=str(worker_python),
        backend="mock",
        worker_args=["--mock", "view_size=64,step_delay=0.1"],
        startup_timeout=60,
    )
    try:
        first_pid = ray.get(actors[0].describe.remote())["worker_pid"]
        out = tmp_path / "out"
        reports = []
        runner = threading.Thread(
            target=lambda: reports.append(map_images([object_png] * 6, out, actors=actors, num_inference_steps=10))
        )
        runner.start()
        deadline = time.monotonic() + 60
        while not list(out.glob("*.obj")):  # the first mesh: both actors are about to start their next objects
            assert time.monotonic() < deadline and runner.is_alive(), "no mesh appeared"
            time.sleep(0.02)
        # Nothing outside the actors shows when the next views start; they take 1 s (10 steps x 0.1 s) and follow
        # the mesh within milliseconds, so 0.4 s later the kill lands inside them, not in the gap between objects
        # (a kill there is no failure: the next request simply goes to a restarted worker).
        time.sleep(NEXT_VIEWS_STARTED_S)
        os.kill(first_pid, signal.SIGKILL)
        runner.join(120)
        assert not runner.is_alive()
        (report,) = reports
        assert all(o.ok for o in report.outcomes), [o.error for o in report.outcomes]
        assert sorted(o.attempts for o in report.outcomes) == [1, 1, 1, 1, 1, 2]
        assert ray.get(actors[0].describe.remote())["worker_pid"] != first_pid
    finally:
        stop_actors(actors)
    assert wait_gone(first_pid, 5.0)


def test_map_images_takes_the_pools_options_and_passes_the_guidance(
    ray_cluster: None, worker_python: Path, object_png: Path, tmp_path: Path
) -> None:
    """map_images has WorkerPool.map's option keywords; the guidance reaches the actor's worker as a keyword and
    inside ViewOptions alike (the mock's views depend on it), and a bad value is one line before any actor starts."""
    import inspect

    from host import InvalidParams, ViewOptions, WorkerPool
    from host.scale.ray import map_images, start_actors, stop_actors

    def options_of(function) -> set[str]:
        return {name for name, p in inspect.signature(function).parameters.items() if p.kind is p.KEYWORD_ONLY}

    assert options_of(WorkerPool.map) <= options_of(map_images)
    with pytest.raises(InvalidParams, match=r"\$\.guidance_scale") as refused:
        map_images([object_png], tmp_path / "bad", actors=[], guidance_scale=-1.0)
    assert "\n" not in str(refused.value)
    actors = start_actors(
        1,
        num_gpus=0,
        python=str(worker_python),
        backend="mock",
        worker_args=["--mock", "view_size=64"],
        startup_timeout=60,
    )
    try:

        def grid(out: str, **options) -> bytes:
            (outcome,) = map_images(
                [object_png], tmp_path / out, actors=actors, num_inference_steps=2, seed=5, **options
            ).outcomes
            assert outcome.ok, outcome.error
            return Path(outcome.grid_path).read_bytes()

        no_noise = grid("keyword", guidance_scale=0.0)
        assert grid("options", view_options=ViewOptions(guidance_scale=0.0)) == no_noise
        assert grid("default") != no_noise
    finally:
        stop_actors(actors)


def test_map_images_with_the_longest_names_and_a_worker_lost_after_its_write(
    ray_cluster: None, worker_python: Path, tmp_path: Path
) -> None:
    """Photos named as long as the file system allows (multi-byte characters) and one not UTF-8 go through Ray
    under names cut to fit; an actor's worker that writes a mesh and dies before answering costs a redo, and the
    redo replaces that mesh, so every object ends ok."""
    import os
    import shutil

    from host.scale.ray import map_images

    photos, out, marker = tmp_path / "photos", tmp_path / "out", tmp_path / "died-once"
    photos.mkdir()
    stems = ["é" * 120 + "a" * 11, os.fsdecode(b"caf\xe9"), "plain"]
    for stem in stems:
        shutil.copy(ROOT / "examples" / "inputs" / "mug.png", photos / f"{stem}.png")
    report = map_images(
        sorted(photos.iterdir()),
        out,
        actors=2,
        num_gpus=0,
        python=str(worker_python),
        backend="mock",
        worker_args=["--mock", f"view_size=64,exit_after_write_once={marker}"],
        num_inference_steps=2,
        startup_timeout=60,
    )
    assert all(o.ok for o in report.outcomes), [o.error for o in report.outcomes]
    assert marker.exists() and sorted(o.attempts for o in report.outcomes) == [1, 1, 2]
    assert sorted(o.name for o in report.outcomes) == sorted(["é" * 120 + "aaaaa", "caf\ufffd", "plain"])
    assert all(len(os.fsencode(p.name)) <= 255 for p in out.iterdir())


@pytest.mark.parametrize(("count", "named"), [(2.5, "got `float` - at `$.actors`"), (0, "`int` >= 1 - at `$.actors`")])
def test_a_bad_actor_count_is_one_line_before_ray_is_reached(count: float, named: str, tmp_path: Path) -> None:
    """The pool's WorkerCount holds Ray's actors too; refused before any cluster is asked (or started)."""
    from host.scale.ray import map_images, start_actors

    for call in (
        lambda: start_actors(count),
        lambda: map_images([], tmp_path, actors=count, address="ray://nowhere:1"),
    ):  # type: ignore[arg-type]
        with pytest.raises(ValueError) as refused:
            call()
        assert named in str(refused.value) and "\n" not in str(refused.value)
