"""Input preparation in the host: cut the object out, centre it and scale it as Zero123++ expects.

Zero123++ was trained on objects centred on a plain background and filling about 85 % of the frame
(upstream's ``resize_foreground(image, 0.85)``); photos rarely look like that, and the views suffer when
they don't. This module needs pillow and numpy (the ``images`` extra); callers import it lazily.

Where the object's outline comes from, in order:

1. a mask (a file, a PIL image or an array; white = object), when one is given;
2. the image's own alpha channel, when it has one that is not fully opaque;
3. with ``remove_background="auto"`` (the default), a photo whose border is mostly near-white: the
   **near-white heuristic**, pixels within ``white_tolerance`` of pure white that can see the image border
   along a row or a column are background (no model, the same result everywhere);
4. any other photo: **rembg** (``host.images.background``, the ``rembg`` extra), as upstream InstantMesh
   does. Where rembg is not installed, the error names the command that installs it into this Python.

Upstream runs rembg on every photo without alpha; here masks, alpha and white backdrops come first, so
inputs that have them give the same result with rembg installed or not. ``"rembg"`` uses rembg for every
photo without a mask or alpha, ``"white"`` only the heuristic (refusing a photo whose border is not white),
``"none"`` takes the whole image as the object.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args

import msgspec
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rpcworker.wire.messages import DEFAULT_VIEW_SIZE, INPUT_FILE_FORMATS, MAX_IMAGE_PIXELS, MAX_INPUT_BYTES

from .background import RembgUnavailable, missing_rembg, rembg_available, rembg_cut
from .errors import PreprocessError
from .framing import UPSTREAM_FOREGROUND_RATIO, BackgroundRemoval, ForegroundRatio
from .mask_files import mask_path_for

__all__ = [
    "UPSTREAM_FOREGROUND_RATIO",
    "BackgroundRemoval",
    "PreprocessError",
    "Prepared",
    "RembgUnavailable",
    "check_rembg_for",
    "foreground_bbox",
    "prepare",
    "prepare_file",
]

ImageSource = Union[str, "os.PathLike[str]", bytes, Image.Image, np.ndarray]
"""A file, encoded PNG/JPEG bytes, a PIL image or an HxW[x1|3|4] uint8/bool array."""
BACKGROUND_REMOVALS: tuple[str, ...] = get_args(BackgroundRemoval)
MAX_PREPARED_PIXELS = 160 * 1024 * 1024
"""Largest photo the host prepares (12800 x 12800; below where Pillow refuses to decode by default): one above the
worker's MAX_IMAGE_PIXELS is shrunk to within it while decoding (a JPEG) or right after, since the model sees 320
pixels a side anyway; larger is refused."""
WHITE_BORDER_SHARE = 0.8
"""The share of border pixels that must be near-white for the near-white heuristic to take a photo."""


@dataclass(frozen=True)
class Prepared:
    """The prepared image and where its outline came from (for messages and contact sheets)."""

    image: Image.Image
    bbox: tuple[int, int, int, int]
    """The object's box in the source image: x0, y0, x1, y1 (exclusive)."""
    mask_source: str
    """``mask file``, ``mask``, ``alpha``, ``rembg``, ``near-white background`` or ``whole image``."""


def prepare(
    image: ImageSource,
    mask: ImageSource | None = None,
    *,
    size: int = DEFAULT_VIEW_SIZE,
    ratio: float = UPSTREAM_FOREGROUND_RATIO,
    background: Literal["transparent", "white"] = "transparent",
    flip: bool = False,
    alpha_threshold: int = 16,
    remove_background: BackgroundRemoval = "auto",
    white_tolerance: int = 16,
) -> Prepared:
    """Crop to the object, scale its longer side to ``ratio * size``, centre it on a ``size`` square.

    ``alpha_threshold``: alpha values above it count as object when finding the box (0..255); a small
    threshold keeps faint halos and JPEG-compressed masks from inflating the box. ``flip`` mirrors the
    result left-right (Any6D flips its crops before InstantMesh). The result is RGBA on a transparent
    canvas, or RGB on white with ``background="white"``.
    """
    try:
        msgspec.convert(ratio, ForegroundRatio)
    except msgspec.ValidationError as exc:
        raise ValueError(f"ratio: {exc}, got {ratio}") from None
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    if remove_background not in BACKGROUND_REMOVALS:
        raise ValueError(
            f"remove_background must be one of {', '.join(BACKGROUND_REMOVALS)}, got {remove_background!r}"
        )
    image_name = _name(image, "the image")
    rgba, source = _cut_out(image, mask, remove_background, white_tolerance, alpha_threshold)
    alpha = np.asarray(rgba.getchannel("A"))
    box = foreground_bbox(alpha, alpha_threshold)
    if box is None:
        where = _name(mask, "the mask") if source in ("mask file", "mask") else image_name
        raise PreprocessError(f"{where}: no object found (the {source} has no pixel above alpha {alpha_threshold})")
    x0, y0, x1, y1 = box
    object_rgba = rgba.crop(box)
    width, height = x1 - x0, y1 - y0
    target = ratio * size
    scale = target / max(width, height)
    new_w = max(1, min(size, round(width * scale)))
    new_h = max(1, min(size, round(height * scale)))
    resized = object_rgba.resize((new_w, new_h), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
    if flip:
        canvas = canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if background == "white":
        white = Image.new("RGBA", canvas.size, (255, 255, 255, 255))
        canvas = Image.alpha_composite(white, canvas).convert("RGB")
    elif background != "transparent":
        raise ValueError(f"background must be 'transparent' or 'white', got {background!r}")
    return Prepared(canvas, box, source)


def prepare_file(
    image_path: str | os.PathLike[str], output_path: str | os.PathLike[str] | None = None, **options: Any
) -> Prepared:
    """``prepare`` for a file, using its ``NAME_mask.png`` when present; saves the result if asked."""
    mask = mask_path_for(image_path)
    prepared = prepare(Path(image_path), mask, **options)
    if output_path is not None:
        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
        prepared.image.save(output_path)
    return prepared


def foreground_bbox(alpha: np.ndarray, threshold: int = 16) -> tuple[int, int, int, int] | None:
    """The box (x0, y0, x1, y1; exclusive ends) of pixels whose alpha is above ``threshold``, or None."""
    inside = np.asarray(alpha) > threshold
    rows = np.flatnonzero(inside.any(axis=1))
    cols = np.flatnonzero(inside.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def check_rembg_for(
    image: str | os.PathLike[str],
    mask: str | os.PathLike[str] | None = None,
    *,
    remove_background: BackgroundRemoval = "auto",
    white_tolerance: int = 16,
) -> None:
    """Raises RembgUnavailable, the very error ``prepare`` would, where preparing this file needs rembg and
    this Python lacks it: the CLI's check before any worker starts. Nothing is decoded where rembg is
    installed or a mask is given; an unreadable image passes (``prepare`` reports it)."""
    if mask is not None or rembg_available():
        return
    name = _name(image, "the image")
    try:
        picture = _open(image, name)
    except PreprocessError:
        return
    _outline_source(picture, name, remove_background, white_tolerance)


# ------------------------------------------------------------------------------------------ internals


def _name(source: Any, fallback: str) -> str:
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else fallback


def _open(source: ImageSource, what: str) -> Image.Image:
    """Any accepted source as a loaded PIL image; unreadable files raise PreprocessError naming them."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        array = source
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        elif array.dtype != np.uint8:
            raise PreprocessError(f"{what}: expected a uint8 or bool array, got {array.dtype}")
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
            raise PreprocessError(f"{what}: expected an HxW, HxWx3 or HxWx4 array, got shape {array.shape}")
        return Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array)
    if isinstance(source, bytes):
        if len(source) > MAX_INPUT_BYTES:
            raise PreprocessError(f"{what}: {len(source)} bytes, over the limit of {MAX_INPUT_BYTES}")
        return _decode(io.BytesIO(source), what)
    path = Path(source)
    if not path.exists():
        raise PreprocessError(f"{path}: no such file")
    if path.is_dir():
        raise PreprocessError(f"{path}: is a directory, not an image")
    size = path.stat().st_size
    if size > MAX_INPUT_BYTES:
        raise PreprocessError(f"input file {path} is {size} bytes, over the limit of {MAX_INPUT_BYTES}")
    return _decode(path, str(path))


def _decode(data: Path | io.BytesIO, what: str) -> Image.Image:
    """A file's or a buffer's image, upright (EXIF), within the pixel limit; PreprocessError naming ``what``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limits are ours, below
            opened = Image.open(data, formats=list(INPUT_FILE_FORMATS))
        with opened:
            pixels = opened.width * opened.height
            if pixels > MAX_PREPARED_PIXELS:
                raise PreprocessError(
                    f"{what}: image of {opened.width}x{opened.height} exceeds {MAX_PREPARED_PIXELS} pixels, "
                    "the most the host prepares"
                )
            shrink = math.ceil(math.sqrt(pixels / MAX_IMAGE_PIXELS)) if pixels > MAX_IMAGE_PIXELS else 1
            if shrink > 1 and opened.format == "JPEG":
                opened.draft(opened.mode, (opened.width // shrink, opened.height // shrink))  # decoded smaller
            opened.load()
            decoded: Image.Image = opened
            if decoded.width * decoded.height > MAX_IMAGE_PIXELS:  # within the model's input, whatever came in
                decoded = decoded.reduce(math.ceil(math.sqrt(decoded.width * decoded.height / MAX_IMAGE_PIXELS)))
            upright = ImageOps.exif_transpose(decoded)
            return upright.convert("RGBA") if upright.mode == "P" else upright.copy()
    except PreprocessError:
        raise
    except Image.DecompressionBombError as exc:
        raise PreprocessError(
            f"{what}: image exceeds {MAX_PREPARED_PIXELS} pixels, the most the host prepares"
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PreprocessError(f"{what}: not a readable image ({exc})") from exc


def image_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """Width and height from the file's header (nothing decoded), or None if it is not a readable image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the header is read
            opened = Image.open(path, formats=list(INPUT_FILE_FORMATS))
        with opened:
            width, height = opened.size
            return int(width), int(height)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def _has_alpha(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        low, _high = image.convert("RGBA").getchannel("A").getextrema()
        return int(low) < 255  # type: ignore[arg-type]  # one band: (min, max) are numbers
    return False


def _cut_out(
    image: ImageSource, mask: ImageSource | None, removal: BackgroundRemoval, tolerance: int, threshold: int
) -> tuple[Image.Image, str]:
    """The image as RGBA whose alpha outlines the object, and where that outline came from."""
    image_name = _name(image, "the image")
    picture = _open(image, image_name)
    if mask is not None:
        mask_name = _name(mask, "the mask")
        mask_image = _open(mask, mask_name)
        if mask_image.size != picture.size:
            raise PreprocessError(
                f"{mask_name}: mask is {mask_image.size[0]}x{mask_image.size[1]} but {image_name} is "
                f"{picture.size[0]}x{picture.size[1]}; they must be the same size"
            )
        alpha = mask_image.getchannel("A") if _has_alpha(mask_image) else mask_image.convert("L")
        rgba = picture.convert("RGB").convert("RGBA")
        if _has_alpha(picture):
            alpha = Image.fromarray(np.minimum(np.asarray(alpha), np.asarray(picture.convert("RGBA").getchannel("A"))))
        rgba.putalpha(alpha)
        return rgba, "mask file" if isinstance(mask, (str, os.PathLike)) else "mask"
    source = _outline_source(picture, image_name, removal, tolerance)
    if source == "rembg":
        return rembg_cut(picture, image_name), source
    if source == "near-white background":
        return _near_white_cut(picture, image_name, tolerance), source
    return picture.convert("RGBA"), source


def _outline_source(picture: Image.Image, name: str, removal: BackgroundRemoval, tolerance: int) -> str:
    """Where the outline of a photo without a mask comes from (the module's order); RembgUnavailable where
    that is rembg and it is not installed."""
    if _has_alpha(picture):
        return "alpha"
    if removal == "none":
        return "whole image"
    if removal == "white":
        return "near-white background"
    if removal == "auto":
        share = _border_share(_near_white(picture, tolerance))
        if share >= WHITE_BORDER_SHARE:
            return "near-white background"
        why = f"no alpha channel, no mask and no white background ({share:.0%} of the border is near-white)"
    else:
        why = "background removal is set to 'rembg'"
    if not rembg_available():
        raise missing_rembg(name, why)
    return "rembg"


def _near_white(picture: Image.Image, tolerance: int) -> np.ndarray:
    """Pixels whose every channel is within ``tolerance`` of 255."""
    rgb = np.asarray(picture.convert("RGB"))
    white: np.ndarray = rgb.min(axis=2) >= 255 - tolerance
    return white


def _border_share(white: np.ndarray) -> float:
    """The share of the image's border pixels that ``white`` marks."""
    return float(np.concatenate([white[0], white[-1], white[:, 0], white[:, -1]]).mean())


def _near_white_cut(picture: Image.Image, name: str, tolerance: int) -> Image.Image:
    """Alpha 0 for near-white pixels that reach the border along a row or a column, else 255."""
    white = _near_white(picture, tolerance)
    share = _border_share(white)
    if share < WHITE_BORDER_SHARE:
        raise PreprocessError(
            f"{name}: no alpha channel, no mask and no white background ({share:.0%} of the border is "
            "near-white); give NAME_mask.png beside it or an RGBA image, or let rembg remove the background "
            "(background removal 'auto' or 'rembg')"
        )
    solid = ~white
    left = np.logical_or.accumulate(solid, axis=1)
    right = np.logical_or.accumulate(solid[:, ::-1], axis=1)[:, ::-1]
    top = np.logical_or.accumulate(solid, axis=0)
    bottom = np.logical_or.accumulate(solid[::-1], axis=0)[::-1]
    enclosed = left & right & top & bottom
    if not solid.any():
        raise PreprocessError(f"{name}: the image is entirely white; no object found")
    rgba = picture.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(solid | enclosed, 255, 0).astype(np.uint8)))
    return rgba
