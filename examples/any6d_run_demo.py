"""Any6D's ``run_demo.py --img_to_3d``, its InstantMesh step served by one warm instantmesh-rpc worker.

In Any6D (taeyeopl/Any6D), the ``if img_to_3d:`` block refines the object mask with SAM2
(``running_sam_box``), prepares the crop (``preprocess_image``: white outside the mask, rembg, mirrored,
object at 80 % of the square; it writes ``input_{obj}.png``), then ``diffusion_image_generation`` and
``instant_mesh_process`` load both models for this one object and write ``6_views_{obj}.png`` and
``mesh_{obj}.obj``. ``make_mesh`` below keeps Any6D's own two functions and sends the RGBA image they return
to the worker with ``prepare=False``, so the model sees exactly Any6D's input; it writes the same two files,
and the demo goes on from ``mesh_{obj}.obj`` unchanged.

Run from Any6D's root, in Any6D's env with the host installed (``pip install instantmesh-rpc``):

    python /path/to/examples/any6d_run_demo.py --python conda:instantmesh

Anywhere else (no ``sam2_instantmesh`` to import) it runs on this project's box example with the host's own
preparation set like Any6D's, and stops after the mesh. Any6D's code is imported only when ``main`` runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

try:
    from instantmesh_rpc import InstantMeshWorker, prepare
except ImportError:  # run from this checkout without the host installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from host import InstantMeshWorker, prepare

ANY6D_FOREGROUND_RATIO = 0.80
"""Any6D scales the object to 80 % of the frame (upstream InstantMesh uses 85 %)."""
ANY6D_SEED = 0
"""run_demo.py calls seed_everything(0); the worker seeds its own generator with the same number."""


def make_mesh(worker: InstantMeshWorker, input_image: Image.Image, save_path: str, obj: str, steps: int = 75) -> str:
    """Replaces diffusion_image_generation + instant_mesh_process; returns the path of ``mesh_{obj}.obj``."""
    views = worker.generate_views(
        input_image,
        prepare=False,  # Any6D's preprocess_image made it
        seed=ANY6D_SEED,
        num_inference_steps=steps,
        save_grid=os.path.join(save_path, f"6_views_{obj}.png"),
        overwrite=True,
    )
    mesh = worker.reconstruct(views, os.path.join(save_path, f"mesh_{obj}.obj"), overwrite=True)
    print(f"mesh {mesh.path}: {mesh.num_vertices} vertices, {mesh.num_faces} faces [{mesh.model_label}]")
    return mesh.path


def any6d_functions() -> Any | None:
    """Any6D's sam2_instantmesh module (SAM2, its preparation), when this runs from Any6D's root in its env."""
    sys.path.insert(0, os.getcwd())
    try:
        import sam2_instantmesh
    except ImportError:
        return None
    finally:
        sys.path.remove(os.getcwd())
    return sam2_instantmesh


def any6d_input(any6d: Any, color: np.ndarray, mask: np.ndarray, save_path: str, obj: str) -> Image.Image:
    """Any6D's own steps: SAM2 refines the mask inside the label's box, then preprocess_image."""
    cmin, rmin, cmax, rmax = any6d.get_bounding_box(mask).astype(np.int32)
    mask_refine = any6d.running_sam_box(color, np.array([cmin, rmin, cmax, rmax])[None, :])
    return any6d.preprocess_image(color, mask_refine, save_path, obj)


def host_input(color: np.ndarray, mask: np.ndarray, save_path: str, obj: str) -> Image.Image:
    """Without Any6D: the host's preparation with Any6D's options (no SAM2, no rembg: the mask is used as is)."""
    image = prepare(color, mask, ratio=ANY6D_FOREGROUND_RATIO, flip=True, background="white").image
    image.save(os.path.join(save_path, f"input_{obj}.png"))
    return image


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--python", default=None, help="the InstantMesh env, e.g. conda:instantmesh")
    parser.add_argument("--device", default=None, help="the worker's device, e.g. cuda:1 to keep it off Any6D's GPU")
    parser.add_argument(
        "--preset", default="official", choices=("official", "tiny"), help="tiny: random weights, a dry run"
    )
    parser.add_argument(
        "--mock", metavar="OPTIONS", default=None, help="the mock worker (no models), e.g. step_delay=0"
    )


def worker_from(args: argparse.Namespace) -> InstantMeshWorker:
    """One worker for the whole run: the models stay loaded from one object to the next."""
    if args.mock is not None:
        return InstantMeshWorker(args.python, backend="mock", worker_args=["--mock", args.mock])
    return InstantMeshWorker(args.python, device=args.device, preset=args.preset)


def demo_frame(demo_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Any6D's demo frame (color.png, object 5 of labels.npz) when present, else this project's box example."""
    if (demo_path / "color.png").exists() and (demo_path / "labels.npz").exists():
        color = np.asarray(Image.open(demo_path / "color.png").convert("RGB"))
        return color, np.load(demo_path / "labels.npz")["seg"] == 5
    examples = Path(__file__).resolve().parent / "inputs"
    color = np.asarray(Image.open(examples / "box.png").convert("RGB"))
    return color, np.asarray(Image.open(examples / "box_mask.png")) > 127


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo_path", default="demo_data")
    add_worker_options(parser)
    args = parser.parse_args()

    obj = "demo_mustard"
    save_path = os.path.join("results", obj)
    os.makedirs(save_path, exist_ok=True)
    color, mask = demo_frame(Path(args.demo_path))
    any6d = any6d_functions()
    if any6d is not None:
        input_image = any6d_input(any6d, color, mask, save_path, obj)
    else:
        print("sam2_instantmesh is not importable here: preparing with the host (Any6D's options, no SAM2)")
        input_image = host_input(color, mask, save_path, obj)

    with worker_from(args) as worker:
        mesh_path = make_mesh(worker, input_image, save_path, obj, steps=args.steps)

    try:
        import trimesh
        from foundationpose.Utils import align_mesh_to_coordinate
    except ImportError:
        print("Any6D's pose estimation is not importable here: stopping after the mesh")
        return 0
    mesh = align_mesh_to_coordinate(trimesh.load(mesh_path))
    mesh.export(os.path.join(save_path, f"center_mesh_{obj}.obj"))
    print("continue as run_demo.py does: est = Any6D(mesh=mesh, ...); est.register_any6d(K=..., rgb=color, ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
