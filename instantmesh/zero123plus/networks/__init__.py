"""The views pipeline's networks: the one seam between `Zero123PlusPipeline` and how its networks run.

The pipeline is handed an object of this shape when it is made, and swaps it for another in one call
(``pipeline.use(networks)``), as diffusers swaps a compiled UNet in; it never learns how they were made. Three
implementations, each whole (a start falls back from one to another all at once, never per part):

- `eager.EagerNetworks`: the diffusers / transformers modules, called as they are (any device, any shape).
- `compiled.CompiledNetworks`: the denoising step and the VAE decoder through `torch.compile` (CUDA, torch 2.4 to
  2.10).
- `packaged.PackagedNetworks`: every network an AOTInductor package, replayed through CUDA graphs, the step's two
  passes side by side (CUDA, torch >= 2.11); made from the modules, or from the views bundle without them.

`choice` says which one a worker start uses; docs/speed.md says why. Names are imported lazily: this module needs
torch only to be type-checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from ..sampling import Upcoming


class ViewsNetworks(Protocol):
    """What the pipeline calls. Tensors are on `device`; the networks' inputs are cast to `dtype` by the pipeline
    (latents, noise and the scheduler's arithmetic stay float32). Outputs may be buffers that the next call of any
    of these networks overwrites (CUDA graphs of one pool): the pipeline uses each before the next runs."""

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...

    def step(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_sample: torch.Tensor,
        upcoming: Upcoming | None = None,
    ) -> torch.Tensor:
        """One denoising step of any batch: the reference (write) pass on `reference_sample`, then the main (read)
        pass on `sample`; a float32 noise prediction. `upcoming` (the next step's timestep and reference sample,
        the very tensors the next call will be handed) may start the next reference pass now, or be ignored."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's decoder: latents (already unscaled, in `dtype`) to an image of about [-1, 1]."""
        ...

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """The VAE's encoder: pixels to the posterior's mean and standard deviation, concatenated on the channels."""
        ...

    def image_embeds(self, pixels: torch.Tensor) -> torch.Tensor:
        """The CLIP vision encoder's projected image embedding."""
        ...

    def prompt_embeds(self, prompt: str) -> torch.Tensor:
        """The text encoder's hidden states for `prompt` (a ValueError for a prompt these networks cannot encode)."""
        ...
