"""Input preparation in the host: cut the object out, centre it and scale it as Zero123++ expects.

Zero123++ was trained on objects centred on a plain background and filling about 85 % of the frame
(upstream's ``resize_foreground(image, 0.85)``); photos rarely look like that, and the views suffer when
they don't. This module needs pillow and numpy (the ``images`` extra); callers import it lazily.

Where the object's outline comes from, in order:

1. a mask (a file, a PIL image or an array; white = object), when one is given;
2. the image's own alpha channel, when it has one that is not fully opaque;
3. ``remove_background="auto"`` (the default): ``rembg`` if it is installed, else the **near-white
   heuristic**: pixels within ``white_tolerance`` of pure white that can see the image border along a
   row or a column are background. It needs a photo on a white (or near-white) backdrop; when the
   image's border is not mostly near-white it refuses with an error that says what to supply instead,
   rather than guessing. ``"rembg"`` requires rembg, ``"white"`` forces the heuristic, ``"none"``
   takes the whole image as the object.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import msgspec
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from rpcworker.wire.messages import DEFAULT_VIEW_SIZE, INPUT_FILE_FORMATS, MAX_IMAGE_PIXELS, MAX_INPUT_BYTES

from .framing import UPSTREAM_FOREGROUND_RATIO, ForegroundRatio
from .mask_files import mask_path_for

__all__ = ["UPSTREAM_FOREGROUND_RATIO", "PreprocessError", "Prepared", "foreground_bbox", "prepare", "prepare_file"]

ImageSource = Union[str, "os.PathLike[str]", bytes, Image.Image, np.ndarray]
"""A file, encoded PNG/JPEG bytes, a PIL image or an HxW[x1|3|4] uint8/bool array."""
BackgroundRemoval = Literal["auto", "rembg", "white", "none"]


class PreprocessError(ValueError):
    """An input that cannot be prepared; the message names the file (or says it was an in-memory image)."""


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
        with Image.open(data, formats=list(INPUT_FILE_FORMATS)) as opened:
            if opened.width * opened.height > MAX_IMAGE_PIXELS:
                raise PreprocessError(
                    f"{what}: image of {opened.width}x{opened.height} exceeds {MAX_IMAGE_PIXELS} pixels"
                )
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            return upright.convert("RGBA") if upright.mode == "P" else upright.copy()
    except PreprocessError:
        raise
    except Image.DecompressionBombError as exc:
        raise PreprocessError(f"{what}: image exceeds {MAX_IMAGE_PIXELS} pixels ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PreprocessError(f"{what}: not a readable image ({exc})") from exc


def image_size(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """Width and height from the file's header (nothing decoded), or None if it is not a readable image."""
    try:
        with Image.open(path, formats=list(INPUT_FILE_FORMATS)) as opened:
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
    if _has_alpha(picture):
        return picture.convert("RGBA"), "alpha"
    if removal == "none":
        return picture.convert("RGBA"), "whole image"
    if removal in ("auto", "rembg"):
        rembg = _import_rembg()
        if rembg is not None:
            return _rembg_cut(rembg, picture, image_name), "rembg"
        if removal == "rembg":
            raise PreprocessError(f"{image_name}: remove_background='rembg' but rembg is not installed")
    elif removal != "white":
        raise ValueError(f"remove_background must be auto, rembg, white or none, got {removal!r}")
    return _near_white_cut(picture, image_name, tolerance), "near-white background"


def _import_rembg() -> Any:
    try:
        import rembg
    except ImportError:
        return None
    return rembg


_REMBG_SESSION: Any = None


def _rembg_cut(rembg: Any, picture: Image.Image, name: str) -> Image.Image:
    """rembg's default model, one session per process (it is slow to create)."""
    global _REMBG_SESSION
    try:
        if _REMBG_SESSION is None:
            _REMBG_SESSION = rembg.new_session()
        cut: Image.Image = rembg.remove(picture.convert("RGB"), session=_REMBG_SESSION).convert("RGBA")
        return cut
    except Exception as exc:  # rembg raises many kinds (model download, onnxruntime); name them all
        raise PreprocessError(
            f"{name}: rembg could not remove the background ({type(exc).__name__}: {exc}); "
            "give a mask (NAME_mask.png) or an RGBA image, or use remove_background='white'"
        ) from exc


def _near_white_cut(picture: Image.Image, name: str, tolerance: int) -> Image.Image:
    """Alpha 0 for near-white pixels that reach the border along a row or a column, else 255."""
    rgb = np.asarray(picture.convert("RGB"))
    white = rgb.min(axis=2) >= 255 - tolerance
    border = np.concatenate([white[0], white[-1], white[:, 0], white[:, -1]])
    if border.mean() < 0.8:
        raise PreprocessError(
            f"{name}: no alpha channel, no mask and no white background ({border.mean():.0%} of the border is "
            "near-white); give NAME_mask.png beside it, an RGBA image, or install rembg"
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
