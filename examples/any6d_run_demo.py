"""Any6D's ``run_demo.py --img_to_3d`` with its InstantMesh step served by instantmesh-rpc.

What Any6D does there (run_demo.py and sam2_instantmesh.py): it refines the object mask with SAM2, then
``preprocess_image`` paints everything outside the mask white, crops, **mirrors the crop left-right** and
scales the object to **80 %** of a square (``resize_foreground(..., 0.80)``); ``diffusion_image_generation``
loads Zero123++ with the white-background UNet and samples 75 steps (saving ``6_views_{obj}.png``);
``instant_mesh_process`` loads the LRM and writes ``mesh_{obj}.obj``. The demo then continues with
``trimesh.load(mesh_{obj}.obj)``, ``align_mesh_to_coordinate`` and ``Any6D(mesh=...)`` for the pose.

Those two model calls need InstantMesh's Python 3.10 / torch / CUDA stack inside Any6D's process, and they
load both models from disk for every object. Here the preparation stays in Any6D's process (pillow and
numpy only), the two model calls go to one warm worker in its own environment, and the demo continues with
the same mesh path, unchanged.

In an Any6D checkout (demo_data/ and its modules importable), replace the ``if img_to_3d:`` block of
run_demo.py with ``make_mesh(...)`` below, or run this file there. Run anywhere else, it uses
examples/inputs/box.png and its mask as the camera image and stops once the mesh is written:

    .venvs/host/bin/python examples/any6d_run_demo.py
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from host import InstantMeshWorker  # noqa: E402
from host.images.preparation import prepare  # noqa: E402

ANY6D_FOREGROUND_RATIO = 0.80
"""Any6D scales the object to 80 % of the frame (upstream InstantMesh uses 85 %)."""


def make_mesh(
    worker: InstantMeshWorker, color: np.ndarray, mask: np.ndarray, save_path: str, obj: str, steps: int = 75
) -> str:
    """Replaces preprocess_image + diffusion_image_generation + instant_mesh_process; returns the mesh path.

    Writes the same files as Any6D (input_{obj}.png, 6_views_{obj}.png, mesh_{obj}.obj), so later steps
    and debugging habits keep working.
    """
    prepared = prepare(color, mask, ratio=ANY6D_FOREGROUND_RATIO, flip=True, background="white")
    prepared.image.save(os.path.join(save_path, f"input_{obj}.png"))
    views = worker.generate_views(
        prepared.image,
        seed=0,
        num_inference_steps=steps,
        save_grid=os.path.join(save_path, f"6_views_{obj}.png"),
        overwrite=True,
    )
    mesh = worker.reconstruct(views, os.path.join(save_path, f"mesh_{obj}.obj"), overwrite=True)
    print(f"mesh {mesh.path}: {mesh.num_vertices} vertices, {mesh.num_faces} faces [{mesh.model_label}]")
    return mesh.path


def refine_mask(color: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """SAM2 box refinement as Any6D does it, when SAM2 is installed; the given mask otherwise."""
    try:
        from sam2.sam2.build_sam import build_sam2
        from sam2.sam2.sam2_image_predictor import SAM2ImagePredictor
    except ImportError:
        return mask
    rows, cols = np.nonzero(mask)
    box = np.array([[cols.min(), rows.min(), cols.max(), rows.max()]])
    predictor = SAM2ImagePredictor(
        build_sam2("./sam2/configs/sam2.1/sam2.1_hiera_l.yaml", "./sam2/checkpoints/sam2.1_hiera_large.pt")
    )
    predictor.set_image(color)
    masks, _, _ = predictor.predict(box=box, multimask_output=False)
    return masks[0].astype(bool)


def demo_inputs(demo_path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """Any6D's demo frame (color.png, labels.npz object 5) when present, else this project's box example."""
    if (demo_path / "color.png").exists() and (demo_path / "labels.npz").exists():
        color = np.asarray(Image.open(demo_path / "color.png").convert("RGB"))
        mask = np.load(demo_path / "labels.npz")["seg"] == 5
        return color, mask, True
    examples = Path(__file__).resolve().parent / "inputs"
    color = np.asarray(Image.open(examples / "box.png").convert("RGB"))
    mask = np.asarray(Image.open(examples / "box_mask.png")) > 127
    return color, mask, False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo_path", default="demo_data")
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument(
        "--python",
        default=None,
        help="the InstantMesh env, e.g. conda:instantmesh (default: this project's models env)",
    )
    args = parser.parse_args()

    obj = "demo_mustard"
    save_path = os.path.join("results", obj)
    os.makedirs(save_path, exist_ok=True)
    color, mask, any6d_data = demo_inputs(Path(args.demo_path))

    with InstantMeshWorker(args.python) as worker:
        mesh_path = make_mesh(worker, color, refine_mask(color, mask), save_path, obj, steps=args.steps)

    import trimesh

    mesh = trimesh.load(mesh_path)
    try:
        from foundationpose.Utils import align_mesh_to_coordinate
    except ImportError:
        print(f"Any6D is not importable here: stopping before pose estimation (mesh bounds {mesh.bounds.tolist()})")
        return 0
    mesh = align_mesh_to_coordinate(mesh)
    mesh.export(os.path.join(save_path, f"center_mesh_{obj}.obj"))
    print(
        "continue as run_demo.py does: est = Any6D(mesh=mesh, ...); est.register_any6d(K=..., rgb=color, depth=..., ob_mask=mask)"
    )
    if not any6d_data:
        print("(this mesh came from the example box, not Any6D's demo_data)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
