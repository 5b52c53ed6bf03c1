"""Our Zero123++ pipeline against the golden arrays recorded from upstream on the tiny random-weight pipeline.

Two layers: stage-by-stage checks that feed the recorded inputs of one stage and compare its
output (so a failure points at one stage), and one full seeded run compared array by array.
Every comparison prints its max abs error (run with -s to see them).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from instantmesh.zero123plus import load_zero123plus  # noqa: E402
from instantmesh.zero123plus.euler_ancestral import EulerAncestralSchedule  # noqa: E402
from instantmesh.zero123plus.image_inputs import to_rgb_on_white  # noqa: E402
from instantmesh.zero123plus.pipeline import unscale_latents  # noqa: E402

pytestmark = [pytest.mark.models, pytest.mark.upstream]


def scheduler_of(pipe, steps: int):
    """diffusers' scheduler of the pipeline's config (the pipeline computes the same schedule itself), set for `steps`."""
    import diffusers

    scheduler = diffusers.EulerAncestralDiscreteScheduler.from_config(pipe.config.scheduler)
    scheduler.set_timesteps(steps)
    return scheduler


GOLDEN = Path(os.environ.get("INSTANTMESH_GOLDEN", "/work/shared/golden")) / "tiny_zero123plus"
if not (GOLDEN / "output.npz").is_file():
    pytest.skip(f"golden data not found at {GOLDEN}", allow_module_level=True)

SEED = 42
CALL = dict(num_inference_steps=4, guidance_scale=4.0, width=64, height=96)
STAGE_ATOL = 1e-4
REL_TOL = 1e-4


def as_array(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def compare(name: str, actual, expected: np.ndarray, *, atol: float | None = None) -> None:
    """Assert closeness: `atol` if given, else REL_TOL relative to the golden array's max-abs."""
    actual = as_array(actual).astype(np.float64)
    expected = np.asarray(expected).astype(np.float64)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    err = float(np.abs(actual - expected).max())
    scale = float(np.abs(expected).max())
    limit = atol if atol is not None else REL_TOL * max(scale, 1e-12)
    print(f"[golden] {name:24s} max abs err {err:.3e}  (max |golden| {scale:.3g}, limit {limit:.1e})")
    assert err <= limit, f"{name}: max abs err {err:.3e} > {limit:.1e}"


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "output.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def pipe():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pipeline = load_zero123plus(GOLDEN / "pipeline", GOLDEN / "whitebg_unet" / "diffusion_pytorch_model.bin")
    yield pipeline
    torch.set_num_threads(threads)


def t_(golden: dict[str, np.ndarray], step: int) -> torch.Tensor:
    return torch.tensor(golden["timesteps"][step], dtype=torch.float32)


# --- stage by stage ----------------------------------------------------------------------------


@torch.inference_mode()
def test_preprocessing(pipe, golden):
    cond = Image.open(GOLDEN / "cond.png")
    rgb = np.asarray(to_rgb_on_white(cond))
    compare("cond_rgb_uint8", rgb, golden["cond_rgb_uint8"], atol=0)
    vae_pixels, clip_pixels = pipe.preprocess(cond)
    compare("vae_pixel_values", vae_pixels, golden["vae_pixel_values"], atol=STAGE_ATOL)
    compare("clip_pixel_values", clip_pixels, golden["clip_pixel_values"], atol=STAGE_ATOL)


@torch.inference_mode()
def test_encoders(pipe, golden):
    compare("text_hidden_prompt", pipe.encode_prompt(""), golden["text_hidden_prompt"], atol=STAGE_ATOL)
    compare("text_hidden_negative", pipe.encode_prompt(""), golden["text_hidden_negative"], atol=STAGE_ATOL)
    image_embeds = pipe.encode_image(torch.from_numpy(golden["clip_pixel_values"]))
    compare("image_embeds", image_embeds, golden["image_embeds"], atol=STAGE_ATOL)


@torch.inference_mode()
def test_global_conditioning(pipe, golden):
    prompt = pipe.global_conditioning(
        torch.from_numpy(golden["text_hidden_prompt"]), torch.from_numpy(golden["image_embeds"])
    )
    ehs = torch.cat([torch.from_numpy(golden["text_hidden_negative"]), prompt])
    compare("unet_main_ehs (stage)", ehs, golden["unet_main_ehs"], atol=STAGE_ATOL)
    compare("unet_refpass_ehs (stage)", ehs, golden["unet_refpass_ehs"], atol=STAGE_ATOL)


@torch.inference_mode()
def test_condition_latents_seeded(pipe, golden):
    """VAE posterior samples: the first two draws after manual_seed(42)."""
    pixels = torch.from_numpy(golden["vae_pixel_values"])
    torch.manual_seed(SEED)
    compare("cond_lat (stage)", pipe.encode_condition_image(pixels), golden["cond_lat"], atol=STAGE_ATOL)
    compare(
        "negative_lat (stage)",
        pipe.negative_condition_latents(pixels),
        golden["negative_lat"],
        atol=STAGE_ATOL,
    )


def test_scheduler_trailing(pipe, golden):
    scheduler = scheduler_of(pipe, CALL["num_inference_steps"])
    assert scheduler.config.timestep_spacing == "trailing"
    compare("timesteps", scheduler.timesteps, golden["timesteps"], atol=0)
    compare("sigmas", scheduler.sigmas, golden["sigmas"])
    assert float(scheduler.init_noise_sigma) == pytest.approx(float(golden["sigmas"][0]), rel=1e-6)


@torch.inference_mode()
def test_rng_replay_without_unet(pipe, golden):
    """Replay the global-RNG draws in upstream order; feed recorded model outputs, check every noised tensor."""
    cond_cat = torch.cat([torch.from_numpy(golden["negative_lat"]), torch.from_numpy(golden["cond_lat"])])
    torch.manual_seed(SEED)
    torch.randn(1, 4, 16, 16), torch.randn(1, 4, 16, 16)
    scheduler = scheduler_of(pipe, CALL["num_inference_steps"])
    latents = torch.randn(1, 4, 48, 32) * scheduler.init_noise_sigma
    compare("initial latents", latents, golden["step_sample"][0])
    for i, t in enumerate(scheduler.timesteps):
        sample = torch.from_numpy(golden["step_sample"][i])
        reference = pipe.noise_condition_latents(cond_cat, scheduler.sigmas[i], torch.randn(cond_cat.shape))
        compare(f"unet_refpass_sample[{i}] (replay)", reference, golden["unet_refpass_sample"][i])
        scaled = scheduler.scale_model_input(torch.cat([sample] * 2), t)
        compare(f"unet_main_sample[{i}] (replay)", scaled, golden["unet_main_sample"][i])
        model_output = torch.from_numpy(golden["step_model_output"][i])
        prev = scheduler.step(model_output, t, sample, return_dict=False)[0]
        compare(f"step_prev_sample[{i}] (replay)", prev, golden["step_prev_sample"][i])


@torch.inference_mode()
@pytest.mark.parametrize("step", range(4))
def test_the_eager_step_per_step(pipe, golden, step):
    out = pipe.networks.step(
        torch.from_numpy(golden["unet_main_sample"][step]),
        t_(golden, step),
        torch.from_numpy(golden["unet_main_ehs"]),
        torch.from_numpy(golden["unet_refpass_sample"][step]),
    )
    compare(f"unet_main_out[{step}] (stage)", out, golden["unet_main_out"][step], atol=STAGE_ATOL)


def test_classifier_free_guidance(golden):
    uncond, cond = golden["unet_main_out"][:, 0:1], golden["unet_main_out"][:, 1:2]
    compare("step_model_output (cfg of golden)", uncond + 4.0 * (cond - uncond), golden["step_model_output"])


@torch.inference_mode()
def test_decode_stage(pipe, golden):
    final = torch.from_numpy(golden["final_latents_scaled"])
    compare(
        "vae_decode_input (stage)",
        unscale_latents(final) / pipe.networks.vae.config.scaling_factor,
        golden["vae_decode_input"],
    )
    decoded = pipe.networks.vae.decode(torch.from_numpy(golden["vae_decode_input"]), return_dict=False)[0]
    compare("vae_decode_output (stage)", decoded, golden["vae_decode_output"], atol=STAGE_ATOL)
    image = pipe.decode_latents(final)
    compare("image_float (stage)", pipe.postprocess(image, "np")[None], golden["image_float"], atol=STAGE_ATOL)


# --- the whole chain, seeded -------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(pipe, golden, request) -> dict[str, np.ndarray]:
    """One full run as upstream's run.py does it (global RNG after manual_seed(42)), with every stage recorded."""
    rec: dict[str, list] = {}

    def keep(key: str, value) -> None:
        rec.setdefault(key, []).append(as_array(value).copy())

    def wrap(owner, attr: str, record) -> None:
        original = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            out = original(*args, **kwargs)
            record(args, kwargs, out)
            return out

        own = attr in vars(owner)  # a class's own method is put back; an instance's wrapper is removed
        setattr(owner, attr, wrapper)
        request.addfinalizer(lambda: setattr(owner, attr, original) if own else delattr(owner, attr))

    wrap(pipe, "encode_condition_image", lambda a, k, out: keep("latents_encoded", out))
    wrap(pipe, "negative_condition_latents", lambda a, k, out: keep("latents_encoded", out))
    wrap(pipe, "encode_prompt", lambda a, k, out: keep("prompt_encoded", out))
    wrap(pipe, "encode_image", lambda a, k, out: keep("image_embeds", out))
    wrap(
        EulerAncestralSchedule,
        "step",
        lambda a, k, out: (keep("step_model_output", a[1]), keep("step_sample", a[3]), keep("step_prev_sample", out)),
    )
    wrap(
        pipe.networks.vae,
        "decode",
        lambda a, k, out: (keep("vae_decode_input", a[0]), keep("vae_decode_output", out[0])),
    )
    wrap(pipe, "decode_latents", lambda a, k, out: (keep("final_latents_scaled", a[0]), keep("decoded", out)))

    def unet_hook(module, args, kwargs, out):
        keep("unet_sample", args[0])
        keep("unet_ehs", kwargs["encoder_hidden_states"])
        keep("unet_out", out[0])

    handle = pipe.networks.unet.register_forward_hook(unet_hook, with_kwargs=True)
    request.addfinalizer(handle.remove)

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    image = pipe(Image.open(GOLDEN / "cond.png"), output_type="pil", **CALL)

    ref, main = slice(0, None, 2), slice(1, None, 2)
    stack = np.stack
    decoded = torch.from_numpy(rec["decoded"][0])
    return {
        "cond_lat": rec["latents_encoded"][0],
        "negative_lat": rec["latents_encoded"][1],
        "image_embeds": rec["image_embeds"][0],
        "text_hidden_prompt": rec["prompt_encoded"][0],
        "text_hidden_negative": rec["prompt_encoded"][1],
        "timesteps": as_array(scheduler_of(pipe, CALL["num_inference_steps"]).timesteps),
        "sigmas": as_array(scheduler_of(pipe, CALL["num_inference_steps"]).sigmas),
        "step_sample": stack(rec["step_sample"]),
        "step_model_output": stack(rec["step_model_output"]),
        "step_prev_sample": stack(rec["step_prev_sample"]),
        "unet_refpass_sample": stack(rec["unet_sample"][ref]),
        "unet_refpass_ehs": rec["unet_ehs"][0],
        "unet_main_sample": stack(rec["unet_sample"][main]),
        "unet_main_ehs": rec["unet_ehs"][1],
        "unet_main_out": stack(rec["unet_out"][main]),
        "final_latents_scaled": rec["final_latents_scaled"][0],
        "vae_decode_input": rec["vae_decode_input"][0],
        "vae_decode_output": rec["vae_decode_output"][0],
        "image_float": pipe.postprocess(decoded, "np")[None],
        "output_uint8": np.asarray(image),
    }


END_TO_END_ARRAYS = [
    "cond_lat",
    "negative_lat",
    "image_embeds",
    "text_hidden_prompt",
    "text_hidden_negative",
    "timesteps",
    "sigmas",
    "step_sample",
    "step_model_output",
    "step_prev_sample",
    "unet_refpass_sample",
    "unet_refpass_ehs",
    "unet_main_sample",
    "unet_main_ehs",
    "unet_main_out",
    "final_latents_scaled",
    "vae_decode_input",
    "vae_decode_output",
    "image_float",
]


@pytest.mark.parametrize("name", END_TO_END_ARRAYS)
def test_end_to_end_array(recorded, golden, name):
    compare(name, recorded[name], golden[name])


def test_end_to_end_output_uint8(recorded, golden):
    actual = recorded["output_uint8"].astype(np.int16)
    expected = golden["output_uint8"].astype(np.int16)
    assert actual.shape == expected.shape
    err = int(np.abs(actual - expected).max())
    print(f"[golden] {'output_uint8':24s} max abs err {err} LSB, {(actual != expected).sum()} values differ")
    assert err <= 1
    assert np.array_equal(np.asarray(Image.open(GOLDEN / "output.png").convert("RGB")), golden["output_uint8"])
