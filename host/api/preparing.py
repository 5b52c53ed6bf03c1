"""Preparing a photo in the host before the worker sees it, as upstream's run.py does before Zero123++.

``prepare_image`` is the one way an input is prepared, for the API and the CLI alike, so one photo with one
``PrepareOptions`` gives the worker the same PNG bytes from either. It needs pillow and numpy (the
``images`` extra), imported only when an image is prepared; a worker that prepares checks that they are
there when it is made (``require_image_libraries``), so a missing library is one line at construction, not
a failure at the first request. Inputs prepared elsewhere (Any6D's crops) go with ``prepare=False``,
untouched (``image_input``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass

from rpcworker.wire.errors import InputNotFound, InputUnreadable
from rpcworker.wire.messages import ImageInput

from .inputs import ImageLike, image_input, png_bytes
from .options import PrepareOptions, checked

IMAGES_EXTRA_INSTALL = 'pip install "instantmesh-rpc[images]"'
IMAGE_LIBRARIES = (("PIL", "pillow"), ("numpy", "numpy"))
"""What preparation imports: (module, package to install)."""


class PreparationUnavailable(ImportError):
    """pillow or numpy is missing in the Python that would prepare inputs; the message is one line with the fix."""


def missing_image_libraries() -> list[str]:
    """The ``images`` extra's packages this Python lacks (looked up, not imported)."""
    return [package for module, package in IMAGE_LIBRARIES if importlib.util.find_spec(module) is None]


def require_image_libraries() -> None:
    """Raises PreparationUnavailable, naming the fix, where inputs cannot be prepared."""
    missing = missing_image_libraries()
    if missing:
        raise PreparationUnavailable(
            f"preparing inputs needs {' and '.join(missing)} in this Python ({sys.executable}): "
            f"{IMAGES_EXTRA_INSTALL} into it, or pass prepare=False for inputs prepared elsewhere"
        )


@dataclass(frozen=True)
class PreparedImage:
    png: bytes
    """What the worker is sent: the prepared square as PNG."""
    outline: str
    """Where the object's outline came from: ``mask file``, ``mask``, ``alpha``, ``rembg``, ``near-white
    background`` or ``whole image``."""


@dataclass(frozen=True)
class Preparation:
    """A worker's choice, which each call may override: prepare or not, and how."""

    on: bool = True
    options: PrepareOptions = PrepareOptions()

    def of_call(self, prepare: bool | None, options: PrepareOptions | None) -> PrepareOptions | None:
        """The options one call prepares its inputs with, checked; None when it sends them as they are."""
        if not (self.on if prepare is None else prepare):
            return None
        require_image_libraries()
        return checked(options or self.options)


def prepare_image(image: ImageLike, options: PrepareOptions) -> PreparedImage:
    """``image`` cut out, cropped, centred and scaled as ``options`` say (a file's ``NAME_mask.png`` beside it is
    its mask, as in the CLI). A missing file raises InputNotFound, one that cannot be prepared InputUnreadable,
    each one line naming it, as the worker would answer them (reason ``needs rembg`` where the photo needs
    rembg and this Python lacks it: the line names the command that installs it)."""
    require_image_libraries()
    from ..images.mask_files import mask_path_for
    from ..images.preparation import PreprocessError, RembgUnavailable, prepare

    chosen = checked(options)
    source: ImageLike
    if isinstance(image, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(image))
        if not os.path.exists(path):
            raise InputNotFound(f"input file not found: {path}", {"path": path})
        source, mask, where = path, mask_path_for(path), path
    else:
        source = bytes(image) if isinstance(image, (bytearray, memoryview)) else image
        mask, where = None, "inline image"
    try:
        prepared = prepare(
            source,
            mask,
            ratio=chosen.foreground_ratio,
            flip=chosen.flip,
            background="white" if chosen.white_background else "transparent",
            remove_background=chosen.background_removal,
        )
    except PreprocessError as exc:
        reason = "needs rembg" if isinstance(exc, RembgUnavailable) else "cannot be prepared"
        raise InputUnreadable(str(exc), {"path": where, "reason": reason}) from None
    return PreparedImage(png_bytes(prepared.image), prepared.mask_source)


def prepared(image: ImageLike, preparation: PrepareOptions | None) -> ImageLike:
    """``image`` prepared with ``preparation`` (its PNG bytes), or, when that is None, ``image`` as it is."""
    return image if preparation is None else prepare_image(image, preparation).png


def model_input(image: ImageLike, preparation: PrepareOptions | None) -> ImageInput:
    """What the worker is sent for ``image``: prepared with ``preparation``, or (None) as it is."""
    return image_input(prepared(image, preparation))
