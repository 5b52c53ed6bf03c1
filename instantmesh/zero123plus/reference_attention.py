"""Reference attention: the UNet's self-attention also looks at the condition image.

Zero123++ runs the UNet twice per denoising step. The first ("write") pass runs on the
noised condition latents and records, for every self-attention layer, the tokens that
layer attends over. The second ("read") pass runs on the latents being denoised; each
self-attention layer appends the recorded tokens to its own before the key and value
projections, so the generated views can copy appearance from the condition image.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

WRITE = "write"
READ = "read"


class ReferenceBank:
    """State shared by all reference processors of one UNet: the pass mode and the recorded tokens."""

    def __init__(self) -> None:
        self.mode: str | None = None
        self.tokens: dict[str, torch.Tensor] = {}

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Within this block, every wrapped self-attention records its input tokens."""
        self.tokens.clear()
        self.mode = WRITE
        try:
            yield
        finally:
            self.mode = None

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Within this block, every wrapped self-attention also attends over the recorded tokens."""
        self.mode = READ
        try:
            yield
        finally:
            self.mode = None
            self.tokens.clear()


class ReferenceAttnProcessor:
    """Parameter-free wrapper around a self-attention processor that reads and writes a `ReferenceBank`.

    Outside a recording or reading block it is plain self-attention, so the UNet stays usable on its own.
    """

    def __init__(self, name: str, bank: ReferenceBank, inner: Any) -> None:
        self.name = name
        self.bank = bank
        self.inner = inner

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if self.bank.mode == WRITE:
            self.bank.tokens[self.name] = context
        elif self.bank.mode == READ:
            reference = self.bank.tokens.pop(self.name)
            encoder_hidden_states = torch.cat([context, reference], dim=1)
        return self.inner(
            attn,
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            **kwargs,
        )


def install_reference_attention(unet: torch.nn.Module) -> ReferenceBank:
    """Wrap the processor of every `attn1` (self-attention) of `unet` and return their shared bank.

    Installing twice re-wraps the original processors rather than stacking wrappers.
    """
    bank = ReferenceBank()
    processors = dict(unet.attn_processors)
    for name, processor in processors.items():
        if isinstance(processor, ReferenceAttnProcessor):
            processor = processor.inner
        if name.endswith("attn1.processor"):
            processor = ReferenceAttnProcessor(name, bank, processor)
        processors[name] = processor
    unet.set_attn_processor(processors)
    return bank
