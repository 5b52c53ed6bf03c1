"""Input checks (rpcworker/images.py): missing, unreadable, too small or odd-mode images, and the views grid's shape."""

from __future__ import annotations

import pytest

from rpcworker.images import load_input_image, load_views_grid
from rpcworker.wire.errors import InputNotFound, InputUnreadable, InvalidParams
from rpcworker.wire.messages import ImagePath, ImagePng, ViewsGridPng


def _png(size=(64, 64), mode="RGBA") -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def test_input_image_errors(tmp_path) -> None:
    with pytest.raises(InputNotFound):
        load_input_image(ImagePath(str(tmp_path / "missing.png")))
    with pytest.raises(InputUnreadable, match="directory"):
        load_input_image(ImagePath(str(tmp_path)))
    with pytest.raises(InvalidParams, match="absolute"):
        load_input_image(ImagePath("x.png"))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(_png()[:40])
    with pytest.raises(InputUnreadable, match="corrupt.png"):
        load_input_image(ImagePath(str(corrupt)))
    with pytest.raises(InputUnreadable, match="smaller"):
        load_input_image(ImagePng(_png((4, 4))))
    with pytest.raises(InputUnreadable, match="mode"):
        load_input_image(ImagePng(_png(mode="I;16")))
    assert load_input_image(ImagePng(_png())).mode == "RGBA"


def test_grid_must_be_three_by_two() -> None:
    with pytest.raises(InputUnreadable, match="3 rows x 2 columns"):
        load_views_grid(ViewsGridPng(_png((64, 64), "RGB")))
    assert load_views_grid(ViewsGridPng(_png((64, 96), "RGB"))).size == (64, 96)
