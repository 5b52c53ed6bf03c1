"""Stand-in networks for the pipeline's seam (`instantmesh.zero123plus.networks.ViewsNetworks`)."""

from __future__ import annotations

from typing import Any


class WithStep:
    """`eager`'s networks with another denoising step (e.g. one that records what it is handed)."""

    def __init__(self, eager: Any, step: Any) -> None:
        self.eager, self.step = eager, step
        self.device, self.dtype = eager.device, eager.dtype

    def decode(self, latents: Any) -> Any:
        return self.eager.decode(latents)

    def encode(self, pixels: Any) -> Any:
        return self.eager.encode(pixels)

    def image_embeds(self, pixels: Any) -> Any:
        return self.eager.image_embeds(pixels)

    def prompt_embeds(self, prompt: str) -> Any:
        return self.eager.prompt_embeds(prompt)
