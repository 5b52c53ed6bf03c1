"""The condition image as the VAE's and the CLIP vision encoder's inputs, read from their preprocessor configs.

Zero123++ publishes two CLIP image-processor configs (feature_extractor_vae, feature_extractor_clip). This is
the arithmetic of transformers' PIL CLIP processor, in its order and dtypes: the short side resized by PIL,
a centre crop (zero padding where the image is smaller), rescaling in float64 then float32, normalising in
float32. Equal to it bit for bit (tests/models/zero123plus/test_image_inputs.py, on every transformers we support), and
a start that needs no transformers import.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import ceil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

PREPROCESSOR_CONFIG = "preprocessor_config.json"


def _per_channel(value: float | Sequence[float]) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]
    if len(values) != 3:
        raise ValueError(f"expected one value or three (RGB), got {value!r}")
    return values[0], values[1], values[2]


def _height_width(size: Any, name: str) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if isinstance(size, Mapping) and {"height", "width"} <= set(size):
        return int(size["height"]), int(size["width"])
    raise ValueError(f"{name} {size!r}: expected a number or height and width")


@dataclass(frozen=True)
class ImageInputs:
    """One processor config's steps; None skips a step, as its do_* flag does."""

    shortest_edge: int | None
    resample: int
    crop: tuple[int, int] | None
    rescale: float | None
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ImageInputs:
        size = config.get("size")
        shortest: int | None = None
        if config.get("do_resize", True):
            if isinstance(size, Mapping) and set(size) == {"shortest_edge"}:
                shortest = int(size["shortest_edge"])
            elif isinstance(size, int):
                shortest = size
            else:
                raise ValueError(f"size {size!r}: only a shortest edge is supported (as CLIP's processors publish)")
        normalize = bool(config.get("do_normalize", True))
        return cls(
            shortest_edge=shortest,
            resample=int(config.get("resample", Image.Resampling.BICUBIC)),
            crop=_height_width(config.get("crop_size"), "crop_size") if config.get("do_center_crop", True) else None,
            rescale=float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else None,
            mean=_per_channel(config["image_mean"]) if normalize else None,
            std=_per_channel(config["image_std"]) if normalize else None,
        )

    @classmethod
    def from_folder(cls, folder: Path) -> ImageInputs:
        return cls.from_config(json.loads((folder / PREPROCESSOR_CONFIG).read_text()))

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """[1, 3, h, w] float32 (uint8 values when neither rescaled nor normalised)."""
        pixels = self.pixels(image)
        if self.rescale is None and self.mean is None:
            return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]
        table = self._value_table
        channels = np.empty((3, *pixels.shape[:2]), dtype=table.dtype)
        for channel in range(3):
            np.take(table[channel], pixels[..., channel], out=channels[channel])
        return torch.from_numpy(channels)[None]

    def pixels(self, image: Image.Image) -> np.ndarray:
        """The h x w x 3 uint8 pixels the values are made of: the image resized and cropped, as the processor does."""
        image = image.convert("RGB")
        if self.shortest_edge is not None:
            image = image.resize(self._resized_size(*image.size), resample=self.resample)
        pixels: np.ndarray = np.asarray(image)
        return pixels if self.crop is None else _center_crop(pixels, *self.crop)

    @functools.cached_property
    def _value_table(self) -> np.ndarray:
        """[3, 256]: what rescaling and normalising make of each 8-bit value, per channel, by `float_steps` itself.

        The steps are elementwise, so looking the pixels up gives their very bytes without the float64 pass, in
        a third of its time: CPU time the GPU waits for at the start of every views call (see docs/benchmarks.md,
        'The views outside the steps').
        """
        values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
        return np.ascontiguousarray(self.float_steps(values).T)

    def float_steps(self, pixels: np.ndarray) -> np.ndarray:
        """Rescaling (in float64, then float32) and normalising (in float32) of h x w x 3 uint8 pixels, as the
        processor does them."""
        if self.rescale is not None:
            pixels = (pixels.astype(np.float64) * self.rescale).astype(np.float32)
        if self.mean is not None and self.std is not None:
            pixels = pixels.astype(np.float32, copy=False)
            pixels = (pixels - np.array(self.mean, dtype=np.float32)) / np.array(self.std, dtype=np.float32)
        return pixels

    def _resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) with the short side at `shortest_edge`, the long one scaled and truncated."""
        assert self.shortest_edge is not None
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.shortest_edge * long / short)
        return (self.shortest_edge, new_long) if width <= height else (new_long, self.shortest_edge)


def _center_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centred height x width window of an h x w x 3 array; zeros where the image does not reach."""
    rows, cols = pixels.shape[:2]
    if rows < height or cols < width:
        padded = np.zeros((max(rows, height), max(cols, width), pixels.shape[2]), dtype=pixels.dtype)
        top, left = ceil((padded.shape[0] - rows) / 2), ceil((padded.shape[1] - cols) / 2)
        padded[top : top + rows, left : left + cols] = pixels
        pixels, rows, cols = padded, padded.shape[0], padded.shape[1]
    top, left = (rows - height) // 2, (cols - width) // 2
    return pixels[top : top + height, left : left + width]


def to_rgb_on_white(image: Image.Image) -> Image.Image:
    """Composite an image with transparency onto white; the model was trained on white backgrounds."""
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")
