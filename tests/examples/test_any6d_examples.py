"""The Any6D drop-ins run Any6D's own preparation and send its image to the worker untouched.

A stand-in for Any6D's root (its ``sam2_instantmesh`` module: ``get_bounding_box``, ``running_sam_box``,
``preprocess_image`` with Any6D's signatures, the last writing ``input_{obj}.png`` as Any6D's does) and an
anchor folder of two objects; the loop example runs there with the mock worker. The mock's views are a
function of the image it receives, so views equal to those of the saved ``input_{obj}.png`` sent as is prove
that the worker got Any6D's image, not one prepared again.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from host import InstantMeshWorker
from tests.conftest import HOST_PYTHON, ROOT

pytestmark = [pytest.mark.pipe, pytest.mark.cli]

EXAMPLES = ROOT / "examples"
STEPS = 2
STAND_IN = textwrap.dedent(
    """
    import os
    import numpy as np
    from PIL import Image

    def get_bounding_box(mask, pad_rel=0.0):
        rows, cols = np.nonzero(mask)
        return np.array([cols.min(), rows.min(), cols.max(), rows.max()])

    def running_sam_box(color, box):
        x1, y1, x2, y2 = box[0]
        refined = np.zeros(color.shape[:2], dtype=bool)
        refined[y1 : y2 + 1, x1 : x2 + 1] = True
        return refined

    def preprocess_image(color, mask, debug_dir, name=None, rem_bg=True, target_bright=999, flip=True):
        rgba = np.dstack([color, np.where(mask, 255, 0).astype(np.uint8)])
        image = Image.fromarray(rgba, "RGBA").transpose(Image.FLIP_LEFT_RIGHT).resize((256, 256))
        image.save(os.path.join(debug_dir, f"input_{name}.png"))
        return image
    """
)


@pytest.fixture()
def any6d_root(tmp_path: Path) -> Path:
    root = tmp_path / "Any6D"
    root.mkdir()
    (root / "sam2_instantmesh.py").write_text(STAND_IN)
    for obj, source in (("004_sugar_box", "box"), ("025_mug", "mug")):
        folder = root / "anchors" / obj
        folder.mkdir(parents=True)
        shutil.copy(EXAMPLES / "inputs" / f"{source}.png", folder / "color.png")
        color = np.asarray(Image.open(folder / "color.png").convert("RGB"))
        mask = (color.min(axis=2) < 240).astype(np.uint8) * 255
        Image.fromarray(np.dstack([mask] * 3)).save(folder / "mask.png")
    (root / "anchors" / "chamfer_distances.xlsx").write_bytes(b"")
    return root


def test_the_examples_import_none_of_any6d_at_import_time(any6d_root: Path) -> None:
    probe = f"import sys; sys.path.insert(0, {str(EXAMPLES)!r}); import any6d_ho3d_anchor; print('sam2_instantmesh' in sys.modules)"
    out = subprocess.run([str(HOST_PYTHON), "-c", probe], cwd=any6d_root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_the_loop_sends_any6d_preparation_to_one_worker(any6d_root: Path, worker_python: Path) -> None:
    argv = [str(HOST_PYTHON), str(EXAMPLES / "any6d_ho3d_anchor.py"), "--anchor_folder", "anchors"]
    argv += ["--python", str(worker_python), "--mock", "step_delay=0", "--steps", str(STEPS), "--unload"]
    out = subprocess.run(argv, cwd=any6d_root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("unloaded") == 2, out.stdout
    with InstantMeshWorker(str(worker_python), backend="mock", worker_args=["--mock", "step_delay=0"]) as worker:
        for obj in ("004_sugar_box", "025_mug"):
            folder = any6d_root / "anchors" / obj
            assert (folder / f"mesh_{obj}.obj").stat().st_size > 0
            sent = Image.open(folder / f"input_{obj}.png")
            worker.generate_views(
                sent, prepare=False, seed=0, num_inference_steps=STEPS, save_grid=folder / "expected.png"
            )
            made = np.asarray(Image.open(folder / f"6_views_{obj}.png"))
            assert np.array_equal(made, np.asarray(Image.open(folder / "expected.png"))), obj
