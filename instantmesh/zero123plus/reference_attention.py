"""Reference attention: the UNet's self-attention also looks at the condition image.

Zero123++ runs the UNet twice per denoising step. The first ("write") pass runs on the
noised condition latents and records, for every self-attention layer, the tokens that
layer attends over. The second ("read") pass runs on the latents being denoised; each
self-attention layer appends the recorded tokens to its own before the key and value
projections, so the generated views can copy appearance from the condition image.

The recorded tokens travel as values: `ReferenceStep` makes a fresh `ReferencePass` per pass and
hands it to the processors through the UNet's ``cross_attention_kwargs``; no processor or module
state changes. One step (both passes) is therefore a pure function of its tensors, which
``torch.compile`` traces once and replays for every step, object and seed. `ReferenceWrite` and
`ReferenceRead` are the two passes apart, the tokens handed from one to the other as tensors: the
reference pass of a step does not depend on the latents being denoised, so it can run ahead
(`overlapped_step`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

PassMode = Literal["write", "read"]
WRITE: PassMode = "write"
READ: PassMode = "read"
REFERENCE_KWARG = "reference"
"""The cross_attention_kwargs entry that carries the `ReferencePass` to every attention processor."""


class ReferencePass:
    """One UNet pass's view of the reference tokens: the write pass fills `tokens`, the read pass reads them."""

    def __init__(self, mode: PassMode, tokens: dict[str, torch.Tensor] | None = None) -> None:
        self.mode = mode
        self.tokens: dict[str, torch.Tensor] = {} if tokens is None else tokens


class ReferenceAttnProcessor:
    """Parameter-free wrapper around a self-attention processor that records or appends reference tokens.

    Without a `ReferencePass` it is plain self-attention, so the UNet stays usable on its own.
    """

    def __init__(self, name: str, inner: Any) -> None:
        self.name = name
        self.inner = inner

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        reference: ReferencePass | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if reference is not None and reference.mode == WRITE:
            reference.tokens[self.name] = context
        elif reference is not None:
            encoder_hidden_states = torch.cat([context, reference.tokens[self.name]], dim=1)
        return self.inner(
            attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kwargs
        )


class IgnoreReference:
    """Wraps a cross-attention processor so that it accepts (and ignores) the `ReferencePass` argument.

    Older diffusers hand every cross_attention_kwargs entry to every processor; newer ones drop (and warn
    about) entries a processor does not name. Naming it here works with both.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(
        self,
        attn: torch.nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        reference: ReferencePass | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        return self.inner(
            attn, hidden_states, encoder_hidden_states=encoder_hidden_states, attention_mask=attention_mask, **kwargs
        )


def reference_layers(unet: torch.nn.Module) -> list[str]:
    """The names of the self-attention layers that record and read reference tokens, in a fixed order."""
    processors = dict(unet.attn_processors)  # type: ignore[arg-type]
    return [name for name, processor in processors.items() if isinstance(processor, ReferenceAttnProcessor)]


def install_reference_attention(unet: torch.nn.Module) -> None:
    """Wrap every attention processor of `unet`: self-attention (`attn1`) records/reads the reference.

    Installing twice re-wraps the original processors rather than stacking wrappers.
    """
    processors = dict(unet.attn_processors)  # type: ignore[arg-type]
    for name, processor in processors.items():
        if isinstance(processor, ReferenceAttnProcessor | IgnoreReference):
            processor = processor.inner
        if name.endswith("attn1.processor"):
            processors[name] = ReferenceAttnProcessor(name, processor)
        else:
            processors[name] = IgnoreReference(processor)
    unet.set_attn_processor(processors)  # type: ignore[operator]


def write_pass(
    unet: torch.nn.Module,
    dtype: torch.dtype,
    timestep: torch.Tensor,
    context: torch.Tensor,
    reference_sample: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """The write pass on `reference_sample`: every reference layer's tokens, by layer name, in `dtype`."""
    write = ReferencePass(WRITE)
    unet(
        reference_sample.to(dtype),
        timestep,
        encoder_hidden_states=context.to(dtype),
        cross_attention_kwargs={REFERENCE_KWARG: write},
        return_dict=False,
    )
    return write.tokens


def read_pass(
    unet: torch.nn.Module,
    dtype: torch.dtype,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    context: torch.Tensor,
    tokens: dict[str, torch.Tensor],
) -> torch.Tensor:
    """The read pass on `sample` with the write pass's `tokens`: the float32 noise prediction."""
    out = unet(
        sample.to(dtype),
        timestep,
        encoder_hidden_states=context.to(dtype),
        cross_attention_kwargs={REFERENCE_KWARG: ReferencePass(READ, tokens)},
        return_dict=False,
    )
    return out[0].float()


class ReferenceStep(torch.nn.Module):
    """The UNet work of one denoising step: the write pass on the reference, then the read pass.

    A module (not a method) so that ``torch.compile`` sees one function of tensors with the UNet as a
    submodule; the dtype is fixed at construction so no parameter is inspected while tracing.
    Inputs are cast to the UNet's dtype; the output is float32. Batch-friendly: every input may carry
    several objects (and their guidance halves) along dimension 0.
    """

    def __init__(self, unet: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.unet = unet
        self.dtype = dtype

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        reference_sample: torch.Tensor,
    ) -> torch.Tensor:
        context = encoder_hidden_states.to(self.dtype)
        return read_pass(
            self.unet,
            self.dtype,
            sample,
            timestep,
            context,
            write_pass(self.unet, self.dtype, timestep, context, reference_sample),
        )


class ReferenceWrite(torch.nn.Module):
    """The write pass alone: every reference layer's tokens (`reference_layers` order), in the UNet's dtype."""

    def __init__(self, unet: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.unet = unet
        self.dtype = dtype
        self.layers = reference_layers(unet)

    def forward(
        self, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor, reference_sample: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        tokens = write_pass(self.unet, self.dtype, timestep, encoder_hidden_states, reference_sample)
        return tuple(tokens[name] for name in self.layers)


class ReferenceRead(torch.nn.Module):
    """The read pass alone, given `ReferenceWrite`'s tokens: the float32 noise prediction."""

    def __init__(self, unet: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.unet = unet
        self.dtype = dtype
        self.layers = reference_layers(unet)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor, *tokens: torch.Tensor
    ) -> torch.Tensor:
        return read_pass(
            self.unet, self.dtype, sample, timestep, encoder_hidden_states, dict(zip(self.layers, tokens, strict=True))
        )
