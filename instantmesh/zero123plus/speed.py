"""Speed options for a loaded Zero123++ pipeline, applied in place, and the library versions they need.

Each keeps the views within fp16 rounding of eager (checked on the tiny preset in the tests, measured on the
GPU by `benchmarks.fast_path`). Options that lost on the GPU (fused QKV projections, compiling the repeated
blocks alone) were removed rather than kept as opt-ins (see docs/benchmarks.md, 'Faster-compute options').
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from .ahead_of_time import AheadOfTime, version_tuple
from .overlapped_step import OverlappedStep
from .reference_attention import ReferenceRead, ReferenceStep, ReferenceWrite
from .sampling import Upcoming

VIEW_OPTIMIZATIONS = ("channels_last", "compile")
"""channels_last: NHWC convolutions in the UNet and VAE. compile: the denoising step (reference pass + main pass),
the VAE and the image encoder compiled with CUDA graphs during load, kept on disk per machine: AOTInductor packages
where the worker can load them (`optimize_views(ahead=...)`; CUDA, torch >= 2.11: a second start loads them
without tracing, and the step's two passes are packages of their own, the next step's reference pass running
beside this step's main pass, `overlapped_step`), else torch.compile of the whole step with its caches
(see docs/benchmarks.md, 'One object on the fast path')."""

COMPILE_MIN_TORCH = (2, 4)
"""torch.compile of the step needs dynamo's support for the kwargs-borne reference pass, CUDA-graph trees under
inference mode and the FX graph cache on disk, all settled by torch 2.4."""


def check_optimizations(optimizations: Iterable[str], device: torch.device | str | None = None) -> None:
    """Refuse, with the reason, options that are unknown or cannot work here (called at worker start)."""
    chosen = set(optimizations)
    unknown = chosen - set(VIEW_OPTIMIZATIONS)
    if unknown:
        raise ValueError(f"unknown optimization(s) {sorted(unknown)}; choose from {', '.join(VIEW_OPTIMIZATIONS)}")
    if "compile" not in chosen:
        return
    found = version_tuple(torch.__version__)
    if found < COMPILE_MIN_TORCH:
        need = ".".join(map(str, COMPILE_MIN_TORCH))
        raise ValueError(
            f"optimization 'compile' needs torch >= {need} (found {torch.__version__}); leave it out with --optimize channels_last"
        )
    if device is None:
        return
    if torch.device(device).type != "cuda":
        raise ValueError(f"optimization 'compile' is for CUDA devices (CUDA graphs); the device is {device}")
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        raise ValueError(
            "optimization 'compile' needs the triton package (it comes with CUDA builds of torch)"
        ) from exc


@dataclass(frozen=True)
class AheadOfTimeSetup:
    """Where and how the compiled modules are built ahead of time (`ahead_of_time.AheadOfTime`)."""

    folder: Path
    device: torch.device
    cuda_graphs: bool = True
    configs: dict[str, Any] = field(default_factory=dict)
    """Inductor settings of the compilation (e.g. max_autotune)."""
    fingerprint: str = ""
    """The code the modules run (`ahead_of_time.code_fingerprint`), so that a package of other code is not loaded."""
    pool: Any = field(default=None, compare=False)
    """The CUDA graph memory pool every compiled module of one pipeline shares (set by `optimize_views`)."""
    constants: Mapping[str, Mapping[str, torch.Tensor]] | None = field(default=None, compare=False)
    """Per package prefix, the weights bound when there are no modules (a start from a views bundle)."""


def compiled_module(
    module: torch.nn.Module | None, prefix: str, backend: str, mode: str | None, ahead: AheadOfTimeSetup | None
) -> Any:
    """torch.compile of `module`, or its AOTInductor packages when `ahead` says where they live (torch.compile
    again for a package that does not load with this torch). No module: packages alone, bound to `ahead.constants`."""

    def with_torch_compile() -> Any:
        return torch.compile(module, backend=backend, mode=mode, dynamic=False)

    if ahead is None:
        if module is None:
            raise ValueError(f"{prefix}: only packages run without their module")
        return with_torch_compile()
    constants = None if module is not None or ahead.constants is None else ahead.constants[prefix]
    return AheadOfTime(
        module,
        ahead.folder,
        prefix,
        ahead.device,
        ahead.pool if ahead.cuda_graphs else None,
        ahead.configs,
        with_torch_compile,
        ahead.fingerprint,
        constants,
    )


Chunk = tuple[int, int]
"""(rows of the batch, rows the compiled step runs them at): the real rows first, copies of the last after."""


class CompiledStep:
    """`ReferenceStep` compiled (`compiled_module`) for fixed input shapes and a fixed set of batch sizes.

    The first call fixes the per-row shapes (view size, context length). `plan` says how the pipeline runs a
    batch: in one call padded up to the smallest compiled size that holds it, or in calls of the smallest
    compiled size when `step_seconds` (measured at warm-up) says that is cheaper (a batch of 2 where 1 and 8
    are compiled); None when no compiled shape fits, so it runs eagerly instead of compiling inside a
    request. With CUDA graphs each call starts a new graph step, and the output (a graph-owned buffer) is
    valid until the next call.
    """

    def __init__(
        self,
        unet: torch.nn.Module | None,
        dtype: torch.dtype,
        mode: str | None,
        backend: str = "inductor",
        row_counts: Sequence[int] = (),
        ahead: AheadOfTimeSetup | None = None,
    ) -> None:
        self.compiled: Any
        if ahead is None:
            self.compiled = compiled_module(
                None if unet is None else ReferenceStep(unet, dtype), "step", backend, mode, None
            )
        else:  # two packages; the step captures their graphs itself, and a fallback (torch.compile) makes none
            passes = replace(ahead, cuda_graphs=False)
            write, read = (None, None) if unet is None else (ReferenceWrite(unet, dtype), ReferenceRead(unet, dtype))
            self.compiled = OverlappedStep(
                compiled_module(write, "reference", backend, None, passes),
                compiled_module(read, "main", backend, None, passes),
                ahead.device,
                ahead.pool,
                ahead.cuda_graphs,
            )
        self.mark_graph_steps = mode == "reduce-overhead" and ahead is None
        """torch.compile's CUDA-graph trees need each call marked as a new step."""
        self.row_counts = sorted(set(row_counts))
        """The batch sizes (rows: objects x guidance halves) compiled at load; empty: the first call's."""
        self.row_shapes: tuple[tuple[int, ...], ...] | None = None
        self.step_seconds: dict[int, float] = {}
        """Seconds of one call per compiled row count, once measured (the backend's warm-up fills it)."""

    def plan(self, *tensors: torch.Tensor) -> list[Chunk] | None:
        rows = tensors[0].shape[0]
        if not self.row_counts:  # only before the first call, which fixes them
            return [(rows, rows)]
        if self.row_shapes is not None and _row_shapes(tensors) != self.row_shapes:
            return None
        padded = next((r for r in self.row_counts if r >= rows), None)
        small = self.row_counts[0]
        calls = -(-rows // small)
        split = [(min(small, rows - i * small), small) for i in range(calls)]
        if padded is None:
            return split
        seconds = self.step_seconds
        if padded != rows and small in seconds and padded in seconds and calls * seconds[small] < seconds[padded]:
            return split
        return [(rows, padded)]

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        reference: torch.Tensor,
        upcoming: Upcoming | None = None,
    ) -> torch.Tensor:
        """`upcoming`: the next step's timestep and reference sample, to start its reference pass now (`OverlappedStep`)."""
        if self.row_shapes is None:
            self.row_shapes = _row_shapes((sample, timestep, context, reference))
            if not self.row_counts:
                self.row_counts = [sample.shape[0]]
        if isinstance(self.compiled, OverlappedStep):
            return self.compiled(sample, timestep, context, reference, upcoming)
        if self.mark_graph_steps:
            torch.compiler.cudagraph_mark_step_begin()
        result: torch.Tensor = self.compiled(sample, timestep, context, reference)
        return result


class VaeDecode(torch.nn.Module):
    """The VAE's latents -> image as a module, so that the compilers see one function of one tensor."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents, return_dict=False)[0]  # type: ignore[operator]


class VaeEncode(torch.nn.Module):
    """The VAE's pixels -> posterior as a module of one tensor out: its mean and standard deviation, concatenated
    along the channels (`Zero123PlusPipeline.encode_condition_image` draws the sample)."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        posterior = self.vae.encode(pixels).latent_dist  # type: ignore[operator]
        return torch.cat([posterior.mean, posterior.std], dim=1)


class ImageEmbeds(torch.nn.Module):
    """The CLIP vision encoder's pixels -> projected image embedding as a module of one tensor."""

    def __init__(self, vision_encoder: torch.nn.Module) -> None:
        super().__init__()
        self.vision_encoder = vision_encoder

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision_encoder(pixels).image_embeds


class CompiledForShape:
    """`module` compiled (`compiled_module`) for one input shape, the first call's; another shape runs it eagerly
    rather than compiling inside a request (without a module, packages alone: an error).

    The VAE decoder: eager, it spends most of its time in channels-first copies around each GroupNorm of the
    960x640 activations (see docs/benchmarks.md, 'The compiled step's time'); compiled, the norms fuse. Decoding
    and the condition's encoders run one object at a time, so one shape serves every batch.
    """

    def __init__(
        self,
        module: torch.nn.Module | None,
        prefix: str,
        backend: str = "inductor",
        ahead: AheadOfTimeSetup | None = None,
    ) -> None:
        self.eager, self.prefix = module, prefix
        self.compiled: Any = compiled_module(module, prefix, backend, None, ahead)
        self.shape: tuple[int, ...] | None = None

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.shape is None:
            self.shape = tuple(tensor.shape)
        if tuple(tensor.shape) == self.shape:
            return self.compiled(tensor)
        if self.eager is None:
            raise ValueError(
                f"{self.prefix} is compiled for inputs of shape {list(self.shape)}, not {list(tensor.shape)}"
            )
        return self.eager(tensor)


class CompiledDecode(CompiledForShape):
    """The VAE decoder compiled for the views' latent shape."""

    def __init__(self, vae: torch.nn.Module, backend: str = "inductor", ahead: AheadOfTimeSetup | None = None) -> None:
        super().__init__(VaeDecode(vae), "decode", backend, ahead)


PACKAGED_PARTS = {
    "reference": "fast_step",
    "main": "fast_step",
    "decode": "fast_decode",
    "encode": "fast_encode",
    "image": "fast_image",
}
"""Package prefix -> the pipeline's attribute that runs it: every network of the views, when they are packages."""
CONSTANT_GROUPS = {"reference": "step", "main": "step"}
"""Packages bound to one module's weights (the step's two passes, the UNet's): the views bundle keeps one copy of
them per group. Any other prefix is a group of its own."""


def constant_group(prefix: str) -> str:
    return CONSTANT_GROUPS.get(prefix, prefix)


def packaged_parts(pipeline: Any) -> dict[str, AheadOfTime]:
    """The pipeline's parts that run as AOTInductor packages, by package prefix."""
    parts = {}
    for prefix, name in PACKAGED_PARTS.items():
        compiled = getattr(getattr(pipeline, name, None), "compiled", None)
        if isinstance(compiled, OverlappedStep):
            compiled = compiled.parts[prefix]
        if isinstance(compiled, AheadOfTime):
            parts[prefix] = compiled
    return parts


def package_seconds(pipeline: Any) -> dict[str, float]:
    """Where preparing the pipeline's AOTInductor packages went (`AheadOfTime.seconds`, and the step's own graph
    captures); empty without them."""
    seconds = {name: s for part in packaged_parts(pipeline).values() for name, s in part.seconds.items()}
    step = getattr(getattr(pipeline, "fast_step", None), "compiled", None)
    return {**seconds, **step.seconds} if isinstance(step, OverlappedStep) else seconds


def _row_shapes(tensors: Sequence[torch.Tensor]) -> tuple[tuple[int, ...], ...]:
    """Each tensor's shape without the batch dimension (0-d tensors, the timestep, give ())."""
    return tuple(tuple(t.shape[1:]) for t in tensors)


def optimize_views(
    pipeline: Any,
    optimizations: Iterable[str],
    compile_backend: str = "inductor",
    compile_mode: str | None = "reduce-overhead",
    row_counts: Sequence[int] = (),
    ahead: AheadOfTimeSetup | None = None,
) -> None:
    """Apply the options; compilation itself happens at the first step of each batch size in `row_counts`
    (the backend warms them up in load; empty: the first call's). `ahead`: AOTInductor packages instead of
    torch.compile, built into (or loaded from) its folder."""
    chosen = set(optimizations)
    check_optimizations(chosen)
    pipeline.networks_changed()
    if "channels_last" in chosen:
        pipeline.unet.to(memory_format=torch.channels_last)
        pipeline.vae.to(memory_format=torch.channels_last)
    if "compile" in chosen:
        if ahead is not None and ahead.cuda_graphs and ahead.pool is None:
            ahead = replace(ahead, pool=torch.cuda.graph_pool_handle())
        step = CompiledStep(pipeline.unet, pipeline.unet.dtype, compile_mode, compile_backend, row_counts, ahead)
        pipeline.fast_step = step
        pipeline.fast_step_plan = step.plan
        pipeline.fast_decode = CompiledDecode(pipeline.vae, compile_backend, ahead)
        if ahead is not None:  # packages of the condition's encoders too: a start from packages alone needs them all
            pipeline.fast_encode = CompiledForShape(VaeEncode(pipeline.vae), "encode", compile_backend, ahead)
            pipeline.fast_image = CompiledForShape(
                ImageEmbeds(pipeline.vision_encoder), "image", compile_backend, ahead
            )
