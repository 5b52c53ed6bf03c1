"""Input preparation on synthetic images whose object boxes are known exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from host.cli.objects import collect_inputs
from host.images.preparation import PreprocessError, foreground_bbox, prepare, prepare_file


def rgba_with_box(width: int, height: int, box: tuple[int, int, int, int], color=(200, 60, 30)) -> Image.Image:
    x0, y0, x1, y1 = box
    array = np.zeros((height, width, 4), np.uint8)
    array[y0:y1, x0:x1] = (*color, 255)
    return Image.fromarray(array)


def expected_box(
    box: tuple[int, int, int, int], size: int = 320, ratio: float = 0.85
) -> tuple[float, float, float, float]:
    w, h = box[2] - box[0], box[3] - box[1]
    scale = ratio * size / max(w, h)
    new_w, new_h = w * scale, h * scale
    return (size - new_w) / 2, (size - new_h) / 2, (size + new_w) / 2, (size + new_h) / 2


def output_box(image: Image.Image) -> tuple[int, int, int, int]:
    alpha = np.asarray(image.getchannel("A"))
    box = foreground_bbox(alpha, 127)
    assert box is not None
    return box


def assert_within_a_pixel(actual, expected) -> None:
    assert np.abs(np.subtract(actual, expected)).max() <= 1.0, (actual, expected)


def test_wide_object_is_cropped_recentred_and_fills_85_percent() -> None:
    prepared = prepare(rgba_with_box(200, 120, (30, 20, 90, 50)))
    assert prepared.image.size == (320, 320) and prepared.image.mode == "RGBA"
    assert prepared.bbox == (30, 20, 90, 50) and prepared.mask_source == "alpha"
    assert_within_a_pixel(output_box(prepared.image), (24, 92, 296, 228))
    assert np.asarray(prepared.image)[0, 0, 3] == 0


@settings(max_examples=30, deadline=None)
@given(
    st.integers(8, 120),
    st.integers(8, 120),
    st.integers(0, 60),
    st.integers(0, 60),
    st.sampled_from([64, 128, 320]),
    st.sampled_from([0.5, 0.8, 0.85, 1.0]),
)
def test_any_box_lands_centred_at_the_ratio(w: int, h: int, x: int, y: int, size: int, ratio: float) -> None:
    box = (x, y, x + w, y + h)
    prepared = prepare(rgba_with_box(x + w + 7, y + h + 5, box), size=size, ratio=ratio)
    assert prepared.bbox == box
    assert_within_a_pixel(output_box(prepared.image), expected_box(box, size, ratio))


def test_mask_file_gives_the_outline_of_an_rgb_photo(tmp_path: Path) -> None:
    photo = np.full((100, 160, 3), (90, 140, 60), np.uint8)
    photo[10:90, 100:140] = (250, 250, 250)
    mask = np.zeros((100, 160), np.uint8)
    mask[10:90, 100:140] = 255
    Image.fromarray(photo).save(tmp_path / "can.png")
    Image.fromarray(mask).save(tmp_path / "can_mask.png")
    prepared = prepare_file(tmp_path / "can.png", tmp_path / "out" / "can_input.png", background="white")
    assert prepared.mask_source == "mask file" and prepared.bbox == (100, 10, 140, 90)
    saved = Image.open(tmp_path / "out" / "can_input.png")
    assert saved.mode == "RGB" and saved.getpixel((0, 0)) == (255, 255, 255)
    inside = np.asarray(saved)[160, 160]
    assert inside.tolist() == [250, 250, 250]
    tall = expected_box((100, 10, 140, 90))
    alpha = prepare(tmp_path / "can.png", tmp_path / "can_mask.png").image
    assert_within_a_pixel(output_box(alpha), tall)


def test_bool_array_mask_and_array_image() -> None:
    photo = np.full((50, 50, 3), 30, np.uint8)
    mask = np.zeros((50, 50), bool)
    mask[5:15, 20:45] = True
    prepared = prepare(photo, mask, size=100)
    assert prepared.mask_source == "mask" and prepared.bbox == (20, 5, 45, 15)
    assert_within_a_pixel(output_box(prepared.image), expected_box((20, 5, 45, 15), 100))


def test_flip_mirrors_left_and_right() -> None:
    array = np.zeros((60, 60, 4), np.uint8)
    array[20:40, 10:30] = (255, 0, 0, 255)
    array[20:40, 30:50] = (0, 0, 255, 255)
    plain = np.asarray(prepare(Image.fromarray(array), size=64).image)
    flipped = np.asarray(prepare(Image.fromarray(array), size=64, flip=True).image)
    assert plain[32, 15, 0] > 200 and plain[32, 48, 2] > 200
    assert flipped[32, 15, 2] > 200 and flipped[32, 48, 0] > 200
    assert_within_a_pixel(output_box(Image.fromarray(flipped)), output_box(Image.fromarray(plain)))


def test_rgb_on_white_uses_the_near_white_heuristic_and_keeps_white_inside_the_object() -> None:
    photo = np.full((80, 120, 3), 252, np.uint8)
    photo[20:60, 30:90] = (40, 40, 160)
    photo[30:50, 50:70] = 255
    prepared = prepare(Image.fromarray(photo), remove_background="white", size=120)
    assert prepared.mask_source == "near-white background" and prepared.bbox == (30, 20, 90, 60)
    out = np.asarray(prepared.image)
    assert out[60, 60, 3] == 255, "white enclosed by the object is part of it"
    assert out[2, 2, 3] == 0


def test_errors_name_the_file(tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(PreprocessError, match="broken.png: not a readable image"):
        prepare(corrupt)
    with pytest.raises(PreprocessError, match="missing.png: no such file"):
        prepare(tmp_path / "missing.png")

    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "obj.png")
    Image.new("L", (40, 30), 0).save(tmp_path / "obj_mask.png")
    with pytest.raises(PreprocessError, match=r"obj_mask.png: no object found"):
        prepare_file(tmp_path / "obj.png")

    Image.new("L", (41, 30), 255).save(tmp_path / "other_mask.png")
    with pytest.raises(PreprocessError, match=r"other_mask.png: mask is 41x30 but .*obj.png is 40x30"):
        prepare(tmp_path / "obj.png", tmp_path / "other_mask.png")

    with pytest.raises(PreprocessError, match=r"obj.png: no alpha channel, no mask and no white background"):
        prepare(tmp_path / "obj.png", remove_background="white")

    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(tmp_path / "empty.png")
    with pytest.raises(PreprocessError, match="empty.png: no object found"):
        prepare(tmp_path / "empty.png")


def test_collect_inputs_pairs_masks_and_names_objects_uniquely(tmp_path: Path) -> None:
    png, jpeg = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0"  # what the host reads of an input before the worker starts
    for name in ("a.png", "a_mask.png", "b.JPG", "face_mask.png", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(jpeg if name.endswith(".JPG") else png)
    other = tmp_path / "more"
    other.mkdir()
    (other / "a.png").write_bytes(png)
    objects, notes = collect_inputs([tmp_path, other / "a.png", tmp_path / "nope.png", tmp_path / "more"])
    names = [(o.name, o.image.name, o.mask.name if o.mask else None, o.problem is not None) for o in objects]
    assert names == [
        ("a", "a.png", "a_mask.png", False),
        ("b", "b.JPG", None, False),
        ("face_mask", "face_mask.png", None, False),
        ("a-2", "a.png", None, False),
        ("nope", "nope.png", None, True),
        ("a-3", "a.png", None, False),
    ]
    assert notes == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert collect_inputs([empty])[0] == [] and "no .png/.jpg images" in collect_inputs([empty])[1][0]
