"""The step profiler's pieces on the tiny pipeline (on the CPU: no kernels, but the same bookkeeping)."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from benchmarks.step_profile import attention_by_backend, attention_calls, kernel_breakdown, kernel_kind, loop_split  # noqa: E402
from instantmesh.zero123plus.reference_attention import ReferenceStep  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream]


def step_inputs(unet: Any) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    context = torch.randn(2, 77, unet.config.cross_attention_dim, generator=generator)
    return (torch.randn(2, 4, 24, 16, generator=generator), torch.tensor(500.0), context, torch.randn(2, 4, 8, 8, generator=generator))


def test_every_attention_call_of_a_step_is_counted_by_shape(tiny_pipe: Any) -> None:
    step, inputs = ReferenceStep(tiny_pipe.unet, tiny_pipe.unet.dtype), step_inputs(tiny_pipe.unet)
    calls = attention_calls(lambda: step(*inputs))
    layers = len(tiny_pipe.unet.attn_processors)
    assert sum(calls.values()) == 2 * layers  # each attention layer once in the write pass, once in the read pass
    read_self = [k for k in calls if k[0][2] == 24 * 16 and k[1][2] > 24 * 16]
    assert read_self, "the read pass's self-attention attends over its own and the reference's tokens"
    assert torch.nn.functional.scaled_dot_product_attention.__name__ == "scaled_dot_product_attention"  # restored

    pytest.importorskip("torch.nn.attention", reason="choosing an SDPA kernel needs torch >= 2.3")
    timed = attention_by_backend(calls, lambda: None, device="cpu")
    assert len(timed["shapes"]) == len(calls)
    assert all({"flash_ms", "efficient_ms", "cudnn_ms"} <= set(row) for row in timed["shapes"])
    assert set(timed["ms_per_step"]) == {"flash", "efficient", "cudnn"}


def test_kernels_are_sorted_by_kind() -> None:
    assert kernel_kind("pytorch_flash::flash_fwd_kernel<...>") == "attention"
    assert kernel_kind("sm90_xmma_fprop_implicit_gemm_f16f16") == "convolution"
    assert kernel_kind("nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NTN") == "matmul"
    assert kernel_kind("triton_poi_fused_add_native_group_norm_3") == "triton (fused)"
    assert kernel_kind("Memcpy HtoD (Pinned -> Device)") == "copy"
    assert kernel_kind("elementwise_kernel") == "other"
    assert kernel_breakdown(lambda: torch.ones(4) + 1, 2, lambda: None) == {"kernels_seen": 0}  # the CPU runs no kernel


def test_the_loop_split_separates_the_per_step_cost_from_the_fixed_part() -> None:
    split = loop_split(lambda steps: 0.25 + 0.02 * steps, 75)
    assert split["loop_step_ms"] == pytest.approx(20.0) and split["fixed_s"] == pytest.approx(0.25)
    assert split["views_s"] == pytest.approx(1.75) and split["views_25_steps_s"] == pytest.approx(0.75)
