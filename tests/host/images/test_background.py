"""Photos without alpha, a mask or a white border: rembg cuts them out (its real code, with a stand-in model and
no network), and where rembg or its model is missing the error is one line saying what to do."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from host.images.background import REMBG_PACKAGES, install_command, rembg_install_command
from host.images.preparation import PreprocessError, prepare, prepare_file
from tests.conftest import ROOT
from tests.host.images.rembg_stand_in import (
    GREEN_IS_OBJECT,
    OBJECT_BOX,
    PHOTO_SIZE,
    offline_rembg,
    write_photo_needing_rembg,
    write_stand_in_model,
)

CHECKOUT_INSTALL = f'{sys.executable} -m pip install "rembg>=2.0.50" "onnxruntime>=1.16"'
"""What a host run from the checkout (as the tests run it) tells a person to install."""


def assert_box_near(actual: tuple[int, int, int, int] | None, expected: tuple[int, int, int, int]) -> None:
    """Within 2 pixels: rembg resizes the photo to its model's 320 square and the mask back (Lanczos)."""
    assert actual is not None and np.abs(np.subtract(actual, expected)).max() <= 2, (actual, expected)


def test_a_photo_without_alpha_mask_or_white_border_is_cut_out_by_rembgs_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = write_photo_needing_rembg(tmp_path / "photo.png")
    write_stand_in_model(tmp_path / "u2net")
    offline_rembg(monkeypatch, tmp_path / "u2net")

    prepared = prepare_file(photo, size=64)
    assert prepared.mask_source == "rembg"
    assert_box_near(prepared.bbox, OBJECT_BOX)
    assert np.asarray(prepared.image.getchannel("A"))[32, 32] == 255

    # The outline is the model's: the opposite model (in another U2NET_HOME, so another session) takes the
    # backdrop for the object, which fills the whole photo.
    write_stand_in_model(tmp_path / "opposite", GREEN_IS_OBJECT)
    offline_rembg(monkeypatch, tmp_path / "opposite")
    assert prepare_file(photo, size=64).bbox == (0, 0, *PHOTO_SIZE)


def test_masks_alpha_and_white_backdrops_come_before_rembg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With rembg installed (and a model that would outline the backdrop), ``auto`` leaves these inputs as they
    were without it; ``rembg`` asks for it anyway."""
    write_stand_in_model(tmp_path / "u2net", GREEN_IS_OBJECT)
    offline_rembg(monkeypatch, tmp_path / "u2net")
    on_white = np.full((60, 80, 3), 250, np.uint8)
    on_white[10:50, 20:60] = (40, 140, 40)
    with_alpha = np.zeros((60, 80, 4), np.uint8)
    with_alpha[10:50, 20:60] = (40, 140, 40, 255)
    mask = np.zeros((60, 80), bool)
    mask[10:50, 20:60] = True

    white = prepare(on_white, size=64)
    assert (white.mask_source, white.bbox) == ("near-white background", (20, 10, 60, 50))
    assert prepare(with_alpha, size=64).mask_source == "alpha"
    assert prepare(on_white, mask, size=64).mask_source == "mask"
    forced = prepare(on_white, size=64, remove_background="rembg")
    assert forced.mask_source == "rembg" and forced.bbox != white.bbox


def test_rembg_is_imported_only_for_a_photo_that_needs_it(tmp_path: Path) -> None:
    """Importing rembg takes seconds (scipy, scikit-image, numba): inputs with alpha or a white backdrop never pay."""
    pytest.importorskip("rembg")
    on_white = np.full((40, 40, 3), 255, np.uint8)
    on_white[10:30, 10:30] = 30
    script = (
        "import sys, numpy as np\n"
        "from host.images.preparation import prepare\n"
        "on_white = np.load(sys.argv[1])\n"
        "sources = [prepare(on_white).mask_source, prepare(np.dstack([on_white, 255 - on_white[..., 0]])).mask_source]\n"
        "print(sources, 'rembg' in sys.modules, 'onnxruntime' in sys.modules)\n"
    )
    np.save(tmp_path / "on_white.npy", on_white)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "on_white.npy")], capture_output=True, text=True, cwd=ROOT
    )
    assert done.stdout.strip() == "['near-white background', 'alpha'] False False", done.stdout + done.stderr


def run_without_rembg(script: str, *arguments: str, blocked: str = "rembg") -> subprocess.CompletedProcess[str]:
    """``script`` in a Python of the test's env where importing ``blocked`` fails, as where the extra is missing."""
    blocker = f"import sys\nsys.modules[{blocked!r}] = None  # as where the rembg extra is not installed\n"
    return subprocess.run(
        [sys.executable, "-c", blocker + textwrap.dedent(script), *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.mark.parametrize("blocked", ["rembg", "onnxruntime"])
def test_without_rembg_such_a_photo_is_one_line_naming_the_install_command(tmp_path: Path, blocked: str) -> None:
    photo = write_photo_needing_rembg(tmp_path / "photo.png")
    on_white = np.full((40, 40, 3), 255, np.uint8)
    on_white[10:30, 10:30] = 30
    Image.fromarray(on_white).save(tmp_path / "on_white.png")
    Image.fromarray(np.dstack([on_white, 255 - on_white[..., 0]])).save(tmp_path / "cut_out.png")
    done = run_without_rembg(
        """
        import sys
        from host.images.preparation import RembgUnavailable, check_rembg_for, prepare
        print("others:", [prepare(other).mask_source for other in sys.argv[2:]])
        for check in (prepare, check_rembg_for):
            try:
                check(sys.argv[1])
            except RembgUnavailable as exc:
                print("refused:", exc)
        """,
        str(photo),
        str(tmp_path / "on_white.png"),
        str(tmp_path / "cut_out.png"),
        blocked=blocked,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "others: ['near-white background', 'alpha']", done.stdout
    assert len(lines) == 3 and lines[1] == lines[2], (
        "the CLI's check before the worker starts says what preparing would"
    )
    refusal = lines[1]
    assert refusal.startswith(f"refused: {photo}: no alpha channel, no mask and no white background (0% of")
    assert (
        f"rembg, which removes such backgrounds, is not installed in this Python; install it with: {CHECKOUT_INSTALL}"
        in refusal
    )


def test_offline_without_rembgs_model_is_one_line_naming_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = write_photo_needing_rembg(tmp_path / "photo.png")
    offline_rembg(monkeypatch, tmp_path / "empty-home")
    with pytest.raises(PreprocessError) as refused:
        prepare(photo)
    message = str(refused.value)
    assert "\n" not in message
    folder = re.escape(str(tmp_path / "empty-home"))
    assert re.match(
        rf"{re.escape(str(photo))}: rembg's model u2net\.onnx is not in {folder}\S* and could not be downloaded "
        r"\(\w+Error: .*\); download https://github\.com/danielgatis/rembg/releases/download/v0\.0\.0/u2net\.onnx "
        r"into that folder \(U2NET_HOME chooses it\), or give NAME_mask\.png beside the photo, or an RGBA image$",
        message,
    ), message


def test_the_install_command_names_the_extra_only_where_the_host_came_from_an_index() -> None:
    assert install_command("/opt/app/bin/python", from_an_index=True) == (
        '/opt/app/bin/python -m pip install "instantmesh-rpc[rembg]"'
    )
    assert install_command("/my envs/python", from_an_index=False) == (
        '\'/my envs/python\' -m pip install "rembg>=2.0.50" "onnxruntime>=1.16"'
    )
    assert rembg_install_command() == CHECKOUT_INSTALL, "the tests run the checkout's host, not an installed one"


def test_the_install_command_installs_what_the_rembg_extra_declares() -> None:
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["rembg"]
    assert tuple(declared) == REMBG_PACKAGES


def test_an_unknown_background_removal_is_refused() -> None:
    with pytest.raises(ValueError, match="remove_background must be one of auto, rembg, white, none, got 'magic'"):
        prepare(np.zeros((8, 8, 3), np.uint8), remove_background="magic")  # type: ignore[arg-type]
