"""The GPU benchmarks, run end to end on the tiny preset: device time is scarce, so a broken benchmark
must fail here, on the CPU, and not half-way through a GPU run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from instantmesh.zero123plus.networks.ahead_of_time import ahead_of_time_available

pytestmark = [pytest.mark.models, pytest.mark.upstream]

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def tiny_weights(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    bench("benchmarks.make_weights", str(folder), "--tiny")
    return folder


def test_sessions_all_three_modes(tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "sessions"
    printed = bench(
        "benchmarks.sessions",
        "--weights",
        str(tiny_weights),
        "--objects",
        "3",
        "--steps",
        "2",
        "--modes",
        "cba",
        "--out",
        str(out),
    )
    results = json.loads((out / "sessions.json").read_text())
    assert results["smoke"] is True
    for mode in "abc":
        times = results["results"][mode]["per_object_s"]
        assert len(times) == 3 and all(t > 0 for t in times), mode
    split = results["results"]["a"]["splits"][0]
    assert split["imports_s"] > 0 and split["load_views_s"] > 0 and split["views_s"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["sessions.csv", "sessions.json", "sessions.md", "sessions.png"]
    assert "TINY preset: a smoke run" in printed
    assert "subprocess per object / warm worker, session total for N=3" in printed
    assert "Where a subprocess-per-object run spends its time" in printed

    merged = tmp_path / "merged"
    bench("benchmarks.sessions", "--merge", str(out / "sessions.json"), "--out", str(merged))
    assert (merged / "sessions.md").read_text() == (out / "sessions.md").read_text()


def test_fast_path_runs_end_to_end(tiny_weights: Path, tmp_path: Path) -> None:
    """The GPU fast-path benchmark on the tiny preset: two starts sharing one cache, eager vs default, export."""
    out = tmp_path / "fast"
    printed = bench(
        "benchmarks.fast_path",
        "--weights",
        str(tiny_weights),
        "--steps",
        "2",
        "--out",
        str(out),
        env={"FAST_PATH_EXTRA_STARTS": "no_pycache:INSTANTMESH_RPC_PYCACHE=off"},
    )
    results = json.loads((out / "fast_path.json").read_text())
    assert results["views_max_abs_diff"] <= 2
    assert {"read_unet_s", "views_read_s", "load_mesh_s", "imports_s"} <= set(results["second_start"]["phases"])
    assert {r["format"] for r in results["export"]} == {"obj", "ply", "glb"}
    assert "cold start, second (caches reused)" in printed
    extra = results["extra_starts"]["no_pycache"]
    assert extra["env"] == {"INSTANTMESH_RPC_PYCACHE": "off"} and extra["ready_s"] > 0 and extra["views_s"] > 0


def test_throughput_by_max_batch(tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "throughput"
    printed = bench(
        "benchmarks.throughput",
        "--weights",
        str(tiny_weights),
        "--batches",
        "1,2",
        "--mesh-lanes",
        "on,off",
        "--objects",
        "3",
        "--steps",
        "2",
        "--format",
        "ply",
        "--out",
        str(out),
    )
    results = json.loads((out / "throughput.json").read_text())["results"]
    assert sorted(results) == ["1/lane-off", "1/lane-on", "2/lane-off", "2/lane-on"]
    assert [results[k]["mesh_lane"] for k in sorted(results)] == ["off", "on", "off", "on"]
    assert results["2/lane-on"]["per_object"]["batch_size"] == [
        2,
        2,
        1,
    ]  # the map keeps batches full; the last object alone
    assert all(
        r["objects"] == 3 and r["objects_per_min"] > 0 and r["views_max_abs_diff_batched_vs_alone"] <= 1
        for r in results.values()
    )
    assert "Throughput of one worker" in printed and (out / "throughput.md").exists()


def test_first_run_on_the_tiny_preset(tiny_weights: Path, tmp_path: Path) -> None:
    """Every measure of a first run but compilation's (no compile on the CPU), written and printed; run as the
    device runs it, in two parts, the second adding to the first's results and to nothing else in --out."""
    out = tmp_path / "first_run"
    for part in ("first", "second"):
        printed = bench(
            "benchmarks.first_run",
            *("--weights", str(tiny_weights), "--tiny", "--steps", "2", "--out", str(out), "--part", part),
            env={"FIRST_RUN_CACHE": str(tmp_path / "cache")},
        )
        if part == "first":  # as a checkout's committed file of an earlier run would sit there
            (out / "first_run.json").write_text(json.dumps({"time_to_first_mesh_s": -1.0, "another_run": True}))
    results = json.loads((out / "first_run.json").read_text())
    assert "another_run" not in results
    measured = ("time_to_first_mesh_s", "one_at_a_time_s", "views_s", "cold_start_cached_s", "objects_per_min")
    for name in (*measured, "one_at_a_time_while_building_s", "max_batch_1_one_at_a_time_s", "max_batch_1_views_s"):
        assert results[name] > 0, name
    stages = results["one_at_a_time_stages"]
    assert stages["views_diffusion_s"] > 0 and stages["mesh_planes_s"] > 0 and stages["mesh_export_s"] > 0
    assert max(stages["views_total_s"], stages["mesh_total_s"]) < results["one_at_a_time_s"]  # medians: no sum
    assert 0 < results["first_load_s"] < results["time_to_first_mesh_s"]
    assert set(results["first_load_seconds"]) == {"views", "mesh"}
    assert results["first_object_stages"]["views_diffusion_s"] > 0
    assert results["time_to_compiled_s"] is None and results["compile_state"] == "off"
    assert results["batched_vs_alone_max_abs_diff"] <= 1 and results["map_failures"] == 0
    assert "peak_gpu_gib" in results and results["torch"]
    assert "| time_to_first_mesh_s |" in printed


@pytest.mark.skipif(not ahead_of_time_available(), reason="this torch has no AOTInductor packages")
def test_step_configs_on_the_tiny_preset(tiny_weights: Path, tmp_path: Path) -> None:
    """The default builds every package; autotune_gemm builds the step's two alone (the others taken from the
    default's), each timed from its bundle as a worker starts and compared with the default's views; a second call
    finds both finished and builds nothing."""
    out = tmp_path / "out"
    args = ("--weights", str(tiny_weights), "--device", "cpu", "--steps", "2", "--repeats", "1", "--out", str(out))
    args += ("--configs", "default,autotune_gemm", "--work", str(tmp_path / "work"))
    printed = bench("benchmarks.step_configs", *args, timeout=1500)
    first = json.loads((out / "step_configs.json").read_text())["configs"]
    default, tuned = first["default"], first["autotune_gemm"]

    def parts(result: dict) -> list[str]:
        return sorted(name.split("(")[0] for name in result["built_this_call"])

    assert parts(default) == ["decode", "encode", "image", "main", "reference"], default
    assert parts(tuned) == ["main", "reference"] and any(f.startswith("decode-") for f in tuned["reused_files"])
    assert default["views_s"] > 0 and tuned["views_s"] > 0 and len(tuned["step_package_build_s"]) == 2
    assert tuned["max_abs_diff_vs_default"] <= 1  # the CPU's matmuls have ATen's kernels alone to choose from
    assert "| autotune_gemm |" in printed
    bench("benchmarks.step_configs", *args)
    again = json.loads((out / "step_configs.json").read_text())["configs"]
    assert {name: r["views_s"] for name, r in again.items()} == {name: r["views_s"] for name, r in first.items()}
