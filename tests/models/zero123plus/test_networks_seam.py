"""The pipeline's one seam: it runs on whatever networks it is handed (`ViewsNetworks`) and swaps them in one call.

A stand-in made of plain tensor arithmetic runs the whole pipeline without a module; `use` between two calls
switches every network at once, forgets what the old ones computed (the blank condition's posterior), and gives
back the networks it replaced; the eager networks after a round trip give what they gave before, bit for bit.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from PIL import Image  # noqa: E402

from instantmesh.zero123plus.loading import read_views_config  # noqa: E402
from instantmesh.zero123plus.pipeline import Zero123PlusPipeline  # noqa: E402
from tests.models.conftest import TINY_ZERO123PLUS as TINY  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream, pytest.mark.usefixtures("one_thread")]
if not TINY.is_dir():
    pytest.skip(f"golden data not found at {TINY}", allow_module_level=True)

SMALL = dict(num_inference_steps=3, width=64, height=96)
HIDDEN = 16
"""The stand-in text encoder's width (the image embedding has the same)."""


class Arithmetic:
    """`ViewsNetworks` of plain tensor arithmetic, recording each call by network."""

    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self, factor: int, scale: float = 0.5) -> None:
        self.factor, self.scale = factor, scale
        """Pixels per latent along each side, as the VAE's."""
        self.calls: list[str] = []

    def step(self, sample, timestep, encoder_hidden_states, reference_sample, upcoming=None):
        self.calls.append("step")
        return (sample * self.scale + reference_sample.mean() + encoder_hidden_states.mean()).float()

    def decode(self, latents):
        self.calls.append("decode")
        return torch.tanh(latents[:, :3].repeat_interleave(self.factor, dim=2).repeat_interleave(self.factor, dim=3))

    def encode(self, pixels):
        self.calls.append("encode" if pixels.any() else "encode blank")
        pooled = torch.nn.functional.avg_pool2d(pixels, self.factor)
        mean = torch.cat([pooled, pooled[:, :1]], dim=1)
        return torch.cat([mean, torch.full_like(mean, 0.1)], dim=1)

    def image_embeds(self, pixels):
        self.calls.append("image")
        return pixels.mean(dim=(2, 3)).repeat(1, HIDDEN // 3 + 1)[:, :HIDDEN]

    def prompt_embeds(self, prompt):
        if prompt:
            raise ValueError("only the empty prompt")
        return torch.zeros(1, 77, HIDDEN)


@pytest.fixture(scope="module")
def cond() -> Image.Image:
    return Image.open(TINY / "cond.png")


def test_a_pipeline_runs_on_the_networks_it_is_handed(cond) -> None:
    config = read_views_config(TINY / "pipeline")
    networks = Arithmetic(config.facts.vae_scale_factor)
    pipe = Zero123PlusPipeline(config, networks)
    assert pipe.networks is networks and pipe.device == networks.device and pipe.dtype == networks.dtype
    views = pipe(cond, generator=1, output_type="np", **SMALL)
    assert views.shape == (96, 64, 3) and views.min() >= 0 and views.max() <= 1
    assert networks.calls == ["image", "encode", "encode blank"] + ["step"] * 3 + ["decode"]
    again = pipe(cond, generator=1, output_type="np", **SMALL)
    assert (again == views).all() and networks.calls[7:] == ["image", "encode"] + ["step"] * 3 + ["decode"]
    with pytest.raises(ValueError, match="only the empty prompt"):
        pipe(cond, prompt="a chair", generator=1, **SMALL)


def test_use_swaps_every_network_between_two_calls(tiny_pipe, cond) -> None:
    eager = tiny_pipe.networks
    before = tiny_pipe(cond, generator=3, output_type="latent", **SMALL)
    stand_in = Arithmetic(tiny_pipe.vae_scale_factor)
    assert tiny_pipe.use(stand_in) is eager and tiny_pipe.networks is stand_in
    swapped = tiny_pipe(cond, generator=3, output_type="latent", **SMALL)
    assert stand_in.calls[:3] == ["image", "encode", "encode blank"]  # the eager blank posterior was forgotten
    assert tiny_pipe.use(eager) is stand_in
    after = tiny_pipe(cond, generator=3, output_type="latent", **SMALL)
    assert not torch.equal(swapped, before) and torch.equal(after, before)
    assert stand_in.calls.count("step") == SMALL["num_inference_steps"]  # nothing ran on it after the swap back
