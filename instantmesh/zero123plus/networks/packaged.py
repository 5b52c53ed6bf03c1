"""The views' networks as AOTInductor packages (`ahead_of_time`), replayed through CUDA graphs: torch >= 2.11's route.

Every network is a package of its own, built once per machine and shapes into the compile cache and bound to the
module's weights, or, in a start from the views bundle (`bundle`), to the bundle's copy of them with no module at
all. The step is two packages, its reference and main passes, the next step's reference pass running beside this
step's main pass (`overlapped_step`); the decoder and the condition's encoders are captured in CUDA graphs of one
pool (`ahead_of_time.AheadOfTime`). Without CUDA (the CPU tests) the same packages run without graphs, in order.

A package loads (or is built) at the first call of each shape, so the worker's warm-up makes those calls in load; a
package that cannot run here raises `ahead_of_time.PackageUnavailable` and the start drops these networks whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..reference_attention import ReferenceRead, ReferenceWrite
from ..sampling import Upcoming
from .ahead_of_time import AheadOfTime
from .batching import BatchedStep
from .eager import EagerNetworks, ImageEmbeds, VaeDecode, VaeEncode
from .overlapped_step import OverlappedStep

PACKAGED_PARTS = ("reference", "main", "decode", "encode", "image")
"""Every package of the views, by prefix: the step's two passes, the VAE's decoder and encoder, the image embedding."""
CONSTANT_GROUPS = {"reference": "step", "main": "step"}
"""Packages bound to one module's weights (the step's two passes, the UNet's): the views bundle keeps one copy of
them per group. Any other prefix is a group of its own."""


def constant_group(prefix: str) -> str:
    return CONSTANT_GROUPS.get(prefix, prefix)


@dataclass(frozen=True)
class PackageSetup:
    """Where and how the packages are built and run."""

    folder: Path
    device: torch.device
    cuda_graphs: bool = True
    configs: dict[str, Any] = field(default_factory=dict)
    """Inductor settings of the compilation (e.g. max_autotune)."""
    fingerprint: str = ""
    """The code the packages run (`ahead_of_time.code_fingerprint`), so that a package of other code is not loaded."""


class PackagedNetworks:
    """`ViewsNetworks` of packages: `from_modules` (builds what is missing) or `from_constants` (the bundle's)."""

    def __init__(
        self,
        modules: Mapping[str, torch.nn.Module | None],
        constants: Mapping[str, Mapping[str, torch.Tensor]] | None,
        prompts: Mapping[str, torch.Tensor],
        setup: PackageSetup,
        dtype: torch.dtype,
        row_counts: Sequence[int] = (),
    ) -> None:
        self.setup, self._dtype, self.prompts = setup, dtype, dict(prompts)
        cuda_graphs = setup.cuda_graphs and setup.device.type == "cuda"
        self.pool = torch.cuda.graph_pool_handle() if cuda_graphs else None
        """The CUDA graph memory pool of every graph but the reference pass's (they run in order on one stream)."""

        def part(prefix: str, pool: Any) -> AheadOfTime:
            bound = None if constants is None else constants[prefix]
            return AheadOfTime(
                modules.get(prefix), setup.folder, prefix, setup.device, pool, setup.configs, setup.fingerprint, bound
            )

        self.parts = {
            prefix: part(prefix, None if prefix in CONSTANT_GROUPS else self.pool) for prefix in PACKAGED_PARTS
        }
        """By prefix (`PACKAGED_PARTS`): the step's passes capture their graphs in `overlapped`, the others their own."""
        self.overlapped = OverlappedStep(
            self.parts["reference"], self.parts["main"], setup.device, self.pool, cuda_graphs
        )
        self.batched = BatchedStep(self.overlapped, row_counts)

    @classmethod
    def from_modules(
        cls, eager: EagerNetworks, setup: PackageSetup, row_counts: Sequence[int] = ()
    ) -> PackagedNetworks:
        """Packages of `eager`'s modules, bound to their weights (no copy); the prompts `eager` keeps."""
        dtype = eager.dtype
        modules = {
            "reference": ReferenceWrite(eager.unet, dtype),
            "main": ReferenceRead(eager.unet, dtype),
            "decode": VaeDecode(eager.vae),
            "encode": VaeEncode(eager.vae),
            "image": ImageEmbeds(eager.vision_encoder),
        }
        return cls(modules, None, eager.prompts, setup, dtype, row_counts)

    @classmethod
    def from_constants(
        cls,
        constants: Mapping[str, Mapping[str, torch.Tensor]],
        prompts: Mapping[str, torch.Tensor],
        setup: PackageSetup,
        dtype: torch.dtype,
        row_counts: Sequence[int] = (),
    ) -> PackagedNetworks:
        """Packages alone, bound to `constants` (by prefix, then FQN): no module, so no package can be built."""
        return cls({}, constants, prompts, setup, dtype, row_counts)

    @property
    def device(self) -> torch.device:
        return self.setup.device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def step(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_sample: torch.Tensor,
        upcoming: Upcoming | None = None,
    ) -> torch.Tensor:
        return self.batched(sample, timestep, encoder_hidden_states, reference_sample, upcoming)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.parts["decode"](latents)
        return result

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.parts["encode"](pixels)
        return result

    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.parts["image"](pixels)
        return result

    def prompt_embeds(self, prompt: str) -> torch.Tensor:
        if prompt not in self.prompts:
            raise ValueError(f"the packaged views keep the embeddings of the prompts {sorted(self.prompts)} alone")
        return self.prompts[prompt]

    def seconds(self) -> dict[str, float]:
        """Where preparing the packages went (`AheadOfTime.seconds`, and the step's own graph captures)."""
        seconds = {name: s for part in self.parts.values() for name, s in part.seconds.items()}
        return {**seconds, **self.overlapped.seconds}
