"""Our condition-image inputs equal transformers' PIL CLIP processor's bit for bit, for both Zero123++ configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from instantmesh.zero123plus.image_inputs import ImageInputs

transformers = pytest.importorskip("transformers")
pytestmark = [pytest.mark.models, pytest.mark.upstream]

CONFIGS = json.loads((Path(__file__).parents[3] / "instantmesh/configs/zero123plus-v1.2.json").read_text())
PROCESSORS = ["feature_extractor_clip/preprocessor_config.json", "feature_extractor_vae/preprocessor_config.json"]
PADDED = {**CONFIGS[PROCESSORS[0]], "size": {"shortest_edge": 48}, "crop_size": {"height": 64, "width": 40}}
"""A crop larger than the resized image along one side: the zero padding."""


def processor(config: dict) -> object:
    cls = getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)
    return cls(**{k: v for k, v in config.items() if k != "image_processor_type"})


@pytest.mark.parametrize("config", [CONFIGS[name] for name in PROCESSORS] + [PADDED], ids=["clip", "vae", "padded"])
@pytest.mark.parametrize("size", [(320, 320), (300, 200), (123, 257), (48, 48)])
def test_the_inputs_equal_the_processors_bit_for_bit(config: dict, size: tuple[int, int]) -> None:
    pixels = np.random.default_rng(sum(size)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    theirs = processor(config)(images=image, return_tensors="pt").pixel_values
    ours = ImageInputs.from_config(config)(image)
    assert ours.dtype == theirs.dtype == torch.float32
    assert torch.equal(ours, theirs)


def test_a_size_it_cannot_follow_is_refused() -> None:
    with pytest.raises(ValueError, match="only a shortest edge is supported"):
        ImageInputs.from_config({**CONFIGS[PROCESSORS[0]], "size": {"height": 224, "width": 224}})


@pytest.mark.parametrize(
    "flags",
    [{"do_normalize": False}, {"do_rescale": False}, {"do_rescale": False, "do_normalize": False}],
    ids=["rescale only", "normalise only", "neither"],
)
def test_the_looked_up_values_equal_the_arithmetic_on_the_pixels(flags: dict) -> None:
    inputs = ImageInputs.from_config({**CONFIGS[PROCESSORS[1]], **flags})
    image = Image.fromarray(np.random.default_rng(7).integers(0, 256, (96, 80, 3), dtype=np.uint8))
    pixels = inputs.pixels(image)
    expected = pixels if len(flags) == 2 else inputs.float_steps(pixels)
    assert torch.equal(inputs(image), torch.from_numpy(np.ascontiguousarray(expected.transpose(2, 0, 1)))[None])
