"""The GPU benchmarks, run end to end on the tiny preset: device time is scarce, so a broken benchmark
must fail here, on the CPU, and not half-way through a GPU run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.models, pytest.mark.upstream]

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def tiny_weights(tiny_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("weights")
    bench("benchmarks.make_weights", str(folder), "--tiny")
    return folder


def test_sessions_all_three_modes(tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "sessions"
    printed = bench("benchmarks.sessions", "--weights", str(tiny_weights), "--objects", "3", "--steps", "2", "--modes", "cba", "--out", str(out))
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


def test_compute_options_match_the_baseline(tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "compute"
    bench("benchmarks.compute", "--weights", str(tiny_weights), "--steps", "2", "--no-compile", "--out", str(out))
    rows = {r["what"]: r for r in json.loads((out / "compute.json").read_text())["rows"]}
    assert {"load views (default options)", "load mesh (default options)", "read LRM .safetensors"} <= set(rows)
    options = [r for what, r in rows.items() if what.startswith("views: --optimize")]
    assert [r["what"] for r in options] == ["views: --optimize channels_last"]
    for row in options + [rows["views: math attention (no SDPA)"]]:
        assert row["difference"] <= 2 / 255, row
    assert any(what.startswith("mesh: bf16") for what in rows)


def test_fast_path_runs_end_to_end(tiny_weights: Path, tmp_path: Path) -> None:
    """The GPU fast-path benchmark on the tiny preset: two starts sharing one cache, eager vs default, export."""
    out = tmp_path / "fast"
    printed = bench("benchmarks.fast_path", "--weights", str(tiny_weights), "--steps", "2", "--out", str(out),
                    env={"FAST_PATH_EXTRA_STARTS": "views_profile:FAST_PATH_VIEWS_PROFILE=1"})
    results = json.loads((out / "fast_path.json").read_text())
    assert results["views_max_abs_diff"] <= 2
    assert {"read_unet_s", "views_read_s", "load_mesh_s", "imports_s"} <= set(results["second_start"]["phases"])
    assert {r["format"] for r in results["export"]} == {"obj", "ply", "glb"}
    assert "cold start, second (caches reused)" in printed
    phases = results["second_start"]["views_phases"]
    assert {"clip_input_s", "encode_image_s", "vae_input_s", "negative_condition_latents_s", "denoise_s", "decode_latents_s",
            "postprocess_s"} <= set(phases)
    assert 0 < phases["denoise_s"] < phases["call_s"] and phases["other_s"] >= 0
    assert set(results["extra_starts"]["views_profile"]["views_profile"]) == {"views_2_steps"}  # --steps 2: one call profiled


def test_throughput_by_max_batch(tiny_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "throughput"
    printed = bench("benchmarks.throughput", "--weights", str(tiny_weights), "--batches", "1,2", "--mesh-lanes", "on,off", "--objects", "3",
                    "--steps", "2", "--format", "ply", "--out", str(out))
    results = json.loads((out / "throughput.json").read_text())["results"]
    assert sorted(results) == ["1/lane-off", "1/lane-on", "2/lane-off", "2/lane-on"]
    assert [results[k]["mesh_lane"] for k in sorted(results)] == ["off", "on", "off", "on"]
    assert results["2/lane-on"]["per_object"]["batch_size"] == [2, 2, 1]  # the map keeps batches full; the last object alone
    assert all(r["objects"] == 3 and r["objects_per_min"] > 0 and r["views_max_abs_diff_batched_vs_alone"] <= 1 for r in results.values())
    assert "Throughput of one worker" in printed and (out / "throughput.md").exists()


def test_step_variants_measures_memory_and_attention_kernels(tiny_weights: Path, tmp_path: Path) -> None:
    """The compiled-step benchmark's eager parts (compiling on the CPU would take minutes; CompiledStep has its own tests)."""
    printed = bench("benchmarks.step_variants", "--weights", str(tiny_weights), "--steps", "2", "--variants", "", "--out", str(tmp_path))
    results = json.loads((tmp_path / "step_variants.json").read_text())
    assert set(results["memory_eager_gib"]) == {"load", "views", "mesh"}
    assert set(results["eager_step_ms"]) == {"torch default", "flash", "cudnn", "efficient"}
    assert results["views_eager_s"] > 0 and results["flops_per_object"] > 0 and results["variants"] == []
    assert "eager step by SDPA backend" in printed and (tmp_path / "step_variants.md").exists()


def test_cold_load_times_every_phase(tiny_weights: Path, tmp_path: Path) -> None:
    """The load-only benchmark: the first start writes the copies, the second reads them; all phases reported."""
    printed = bench("benchmarks.cold_load", "--weights", str(tiny_weights), "--starts", "2", "--out", str(tmp_path))
    starts = json.loads((tmp_path / "cold_load.json").read_text())["starts"]
    assert len(starts) == 2 and "start 2:" in printed
    phases = starts[1]["phases"]
    assert {"imports_s", "read_imports_s", "read_cuda_init_s", "unet_weights_s", "read_unet_s", "views_read_s",
            "mesh_read_s", "mesh_geometry_s", "load_views_s", "load_mesh_s"} <= set(phases)


def test_mesh_memory_measures_the_extraction_alone(tmp_path: Path) -> None:
    printed = bench("benchmarks.mesh_memory", "--grid", "24", "--out", str(tmp_path))
    results = json.loads((tmp_path / "mesh_memory.json").read_text())
    assert results["grid"] == 24 and results["vertices"] > 0 and results["faces"] > 0
    assert results["peak_over_inputs_gib"] >= 0 and len(results["mesh_sha1"]) == 12 and "peak over inputs GiB" in printed


def test_read_lanes_times_each_lane_count_and_chunk(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({"a": torch.randn(300_000), "b": torch.randn(5, 7)}, str(path))
    bench("benchmarks.read_lanes", str(path), "--device", "cpu", "--lanes", "1,3", "--chunks-mib", "1", "--repeats", "1",
          "--staging", "pinned,pageable", "--fresh-pinned", "--out", str(tmp_path))
    rows = json.loads((tmp_path / "read_lanes.json").read_text())["rows"]
    assert [(r["staging"], r["lanes"]) for r in rows] == [("pinned", 1), ("pinned", 3), ("pageable", 1), ("pageable", 3)]
    assert all(r["gb_per_s"] > 0 and r["fresh_pinned"] for r in rows)


def test_step_overlap_refuses_a_machine_without_cuda(tmp_path: Path) -> None:
    """It measures CUDA graphs on two streams; its passes are the product's (`tests/models/zero123plus/test_overlapped_step.py`)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the benchmark itself")
    done = subprocess.run([sys.executable, "-m", "benchmarks.step_overlap", "--weights", str(tmp_path), "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode != 0 and done.stderr.strip().splitlines()[-1] == "step_overlap measures CUDA graphs on two streams: it needs a CUDA device"


def test_views_host_work_compares_the_looked_up_inputs_with_the_arithmetic(tmp_path: Path) -> None:
    printed = bench("benchmarks.views_host_work", "--repeats", "2", "--out", str(tmp_path))
    results = json.loads((tmp_path / "views_host_work.json").read_text())["results"]
    assert set(results) == {"feature_extractor_vae", "feature_extractor_clip"}
    assert all(r["arithmetic_s"] > 0 and r["looked_up_s"] > 0 for r in results.values())
    assert "arithmetic -> looked up" in printed
