"""Zero123++ pipeline behaviour the worker relies on: progress, cancellation, seeding, its networks' outputs."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from instantmesh.zero123plus import load_zero123plus, to_rgb_on_white  # noqa: E402
from instantmesh.zero123plus.networks.eager import ImageEmbeds, VaeDecode, VaeEncode  # noqa: E402
from instantmesh.zero123plus.pipeline import Zero123PlusPipeline, eight_bit, quantised  # noqa: E402
from instantmesh.zero123plus.reference_attention import ReferenceAttnProcessor  # noqa: E402
from tests.models.conftest import TINY_ZERO123PLUS  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream, pytest.mark.usefixtures("one_thread")]

TINY = TINY_ZERO123PLUS
if not TINY.is_dir():
    pytest.skip(f"golden data not found at {TINY}", allow_module_level=True)

SMALL = dict(num_inference_steps=2, width=64, height=96)


class Cancelled(Exception):
    pass


@pytest.fixture(scope="module")
def pipe(tiny_pipe):
    return tiny_pipe


@pytest.fixture(scope="module")
def cond() -> Image.Image:
    return Image.open(TINY / "cond.png")


def test_progress_reports_every_step(pipe, cond):
    calls = []
    pipe(cond, generator=0, output_type="latent", progress=lambda step, total: calls.append((step, total)), **SMALL)
    assert calls == [(1, 2), (2, 2)]


def test_cancellation_aborts_and_leaves_the_unet_clean(pipe, cond):
    calls = []

    def check():
        calls.append(None)
        if len(calls) == 2:
            raise Cancelled

    with pytest.raises(Cancelled):
        pipe(cond, generator=0, check_cancelled=check, **SMALL)
    out = pipe(cond, generator=0, output_type="np", **SMALL)
    assert np.isfinite(out).all()


def test_seed_is_reproducible_and_independent_of_global_rng(pipe, cond):
    torch.manual_seed(0)
    a = pipe(cond, generator=7, output_type="latent", **SMALL)
    torch.manual_seed(1)
    b = pipe(cond, generator=torch.Generator().manual_seed(7), output_type="latent", **SMALL)
    c = pipe(cond, generator=8, output_type="latent", **SMALL)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_output_types_agree(pipe, cond):
    arr = pipe(cond, generator=3, output_type="np", **SMALL)
    pil = pipe(cond, generator=3, output_type="pil", **SMALL)
    pt = pipe(cond, generator=3, output_type="pt", **SMALL)
    assert pil.size == (64, 96) and pil.mode == "RGB"
    assert tuple(pt.shape) == (3, 96, 64)
    np.testing.assert_array_equal(pt.permute(1, 2, 0).numpy(), arr)
    np.testing.assert_array_equal(np.asarray(pil), (arr * 255).round().astype(np.uint8))


def test_the_8_bit_pixels_are_the_same_bytes_made_by_torch_or_numpy():
    """On a GPU torch makes them where the image is; numpy's float32 product and rounding give the same bytes."""
    image = torch.cat([torch.linspace(0, 1, 3 * 64 * 96), torch.rand(3 * 64 * 96)]).reshape(3, 192, 64)
    by_numpy = eight_bit(image)
    np.testing.assert_array_equal(quantised(image).numpy(), by_numpy)
    np.testing.assert_array_equal(by_numpy, (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    np.testing.assert_array_equal(
        np.asarray(Zero123PlusPipeline.postprocess(image[None] * 2 - 1, "pil")), eight_bit((image * 2 - 1) / 2 + 0.5)
    )


def test_the_blank_condition_is_encoded_once_and_gives_what_encoding_it_gives(pipe, cond):
    pipe.use(pipe.networks)
    encoded: list[str] = []
    encode = pipe.networks.vae.encode
    pipe.networks.vae.encode = lambda pixels, *a, **k: (
        encoded.append("blank" if not pixels.any() else "image"),
        encode(pixels, *a, **k),
    )[1]
    try:
        first = pipe(cond, generator=5, output_type="latent", **SMALL)
        again = pipe(cond, generator=5, output_type="latent", **SMALL)
        pipe.use(pipe.networks)
        fresh = pipe(cond, generator=5, output_type="latent", **SMALL)
    finally:
        del pipe.networks.vae.encode
    assert encoded == ["image", "blank", "image", "image", "blank"]
    assert torch.equal(first, again) and torch.equal(again, fresh)


class GraphLike:
    """`ViewsNetworks` over eager ones whose every call spoils the outputs of the calls before it, as CUDA graphs of
    one pool may (each output is valid until the next replay of any of them)."""

    def __init__(self, eager) -> None:
        self.eager, self.returned = eager, []
        self.device, self.dtype = eager.device, eager.dtype

    def _spoiling(self, output):
        for earlier in self.returned:
            earlier.fill_(float("nan"))
        self.returned[:] = [output.clone()]
        return self.returned[0]

    def step(self, *inputs):
        return self._spoiling(self.eager.step(*inputs))

    def decode(self, latents):
        return self._spoiling(VaeDecode(self.eager.vae)(latents))

    def encode(self, pixels):
        return self._spoiling(VaeEncode(self.eager.vae)(pixels))

    def image_embeds(self, pixels):
        return self._spoiling(ImageEmbeds(self.eager.vision_encoder)(pixels))

    def prompt_embeds(self, prompt):
        return self.eager.prompt_embeds(prompt)


def test_each_networks_output_is_used_before_the_next_network_runs(pipe, cond):
    """Compiled, the networks are CUDA graphs of one pool, each output valid only until the next replay of any of
    them: networks that spoil every earlier output at each call must change nothing."""
    expected = pipe(cond, generator=4, output_type="np", **SMALL)
    eager = pipe.use(GraphLike(pipe.networks))
    try:
        spoiled = pipe(cond, generator=4, output_type="np", **SMALL)
    finally:
        pipe.use(eager)
    np.testing.assert_array_equal(spoiled, expected)


def test_no_guidance_runs_without_negative_branch(pipe, cond):
    batches = []
    handle = pipe.networks.unet.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        pipe(cond, generator=0, guidance_scale=1.0, output_type="latent", **SMALL)
    finally:
        handle.remove()
    assert batches == [1, 1, 1, 1]


def test_reference_processors_are_plain_attention_outside_a_pass(pipe):
    """With no pass active the wrapped UNet computes exactly what the unwrapped one does."""
    processors = pipe.networks.unet.attn_processors
    wrapped = [n for n, p in processors.items() if isinstance(p, ReferenceAttnProcessor)]
    assert wrapped and all(n.endswith("attn1.processor") for n in wrapped)
    assert len(wrapped) == sum(n.endswith("attn1.processor") for n in processors)

    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 16, 16, generator=gen)
    ehs = torch.randn(1, 77, pipe.networks.unet.config.cross_attention_dim, generator=gen)
    t = torch.tensor(500.0)
    with torch.inference_mode():
        ours = pipe.networks.unet(sample, t, encoder_hidden_states=ehs).sample
        pipe.networks.unet.set_attn_processor(
            {n: (p.inner if isinstance(p, ReferenceAttnProcessor) else p) for n, p in processors.items()}
        )
        try:
            plain = pipe.networks.unet(sample, t, encoder_hidden_states=ehs).sample
        finally:
            pipe.networks.unet.set_attn_processor(processors)
    assert torch.equal(ours, plain)


def test_rgb_on_white():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    rgb = np.asarray(to_rgb_on_white(rgba))
    assert rgb.shape == (4, 4, 3)
    assert tuple(rgb[0, 0]) == (10, 20, 30) and tuple(rgb[1, 1]) == (255, 255, 255)
    gray = to_rgb_on_white(Image.new("L", (2, 2), 7))
    assert gray.mode == "RGB" and tuple(np.asarray(gray)[0, 0]) == (7, 7, 7)
    plain = Image.new("RGB", (2, 2))
    assert to_rgb_on_white(plain) is plain


def test_bad_size_is_rejected(pipe, cond):
    with pytest.raises(ValueError, match="multiples of 8"):
        pipe(cond, num_inference_steps=1, width=60, height=96)


GOLDEN_CALL = dict(num_inference_steps=4, guidance_scale=4.0, width=64, height=96)


def _max_rel_err(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual.astype(np.float64) - expected).max() / np.abs(expected).max())


def test_cpu_generator_reproduces_golden(pipe, cond):
    """A seeded CPU generator draws what the global RNG does after manual_seed; this is the path CUDA runs use."""
    golden = np.load(TINY / "output.npz")["final_latents_scaled"]
    latents = pipe(cond, generator=torch.Generator().manual_seed(42), output_type="latent", **GOLDEN_CALL)
    err = _max_rel_err(latents.numpy(), golden)
    print(f"[zero123plus] final latents, CPU generator: max rel err {err:.2e}")
    assert err < 1e-4


@pytest.mark.needs("torch", (2, 3), "float16 convolutions on the CPU need torch 2.3+")
def test_float16_follows_float32(cond):
    """Half-precision networks with float32 latents and noise stay close to the float32 golden run."""
    half = load_zero123plus(
        TINY / "pipeline", TINY / "whitebg_unet" / "diffusion_pytorch_model.bin", dtype=torch.float16
    )
    assert half.networks.unet.dtype == half.networks.vae.dtype == half.networks.text_encoder.dtype == torch.float16
    golden = np.load(TINY / "output.npz")
    latents = half(cond, generator=42, output_type="latent", **GOLDEN_CALL)
    assert latents.dtype == torch.float32
    err = _max_rel_err(latents.numpy(), golden["final_latents_scaled"])
    print(f"[zero123plus] final latents, float16 networks: max rel err {err:.2e}")
    assert err < 2e-2
    with torch.inference_mode():
        image = half.postprocess(half.decode_latents(latents), "np")
    assert np.abs(image - golden["image_float"][0]).max() < 5e-2
