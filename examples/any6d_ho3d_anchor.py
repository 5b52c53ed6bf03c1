"""Any6D's ``run_ho3d_anchor.py --img_to_3d`` loop, with one warm worker made once for all objects.

Any6D's loop builds Zero123++ and the LRM again for every object (``diffusion_image_generation`` and
``instant_mesh_process`` load them from disk and free them). Here one worker keeps both models on the GPU
across the loop; per object, Any6D's own SAM2 refinement and ``preprocess_image`` make the input (imported
from its ``sam2_instantmesh`` when ``main`` runs), and the files are Any6D's: ``input_{obj}.png``,
``6_views_{obj}.png``, ``mesh_{obj}.obj`` in ``{anchor_folder}/{obj}/``.

Sharing the GPU with SAM2 and FoundationPose: ``--device cuda:1`` gives the worker a GPU of its own;
``--unload`` frees the worker's models after each mesh (``worker.unload()``) so the pose step has the
whole GPU, at the price of loading them again for the next object (the README's Any6D section).

    python /path/to/examples/any6d_ho3d_anchor.py --anchor_folder DIR --python conda:instantmesh

Without Any6D's code importable (anywhere but its root and env) it prepares with the host instead and
stops after each mesh; a folder per object with ``color.png`` and ``mask.png`` is all it needs then.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from any6d_run_demo import add_worker_options, any6d_functions, any6d_input, host_input, make_mesh, worker_from  # noqa: E402


def objects(anchor_folder: Path) -> list[str]:
    """The object folders, as run_ho3d_anchor.py lists them (everything but the .xlsx summary)."""
    return sorted(name for name in os.listdir(anchor_folder) if not name.endswith(".xlsx"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchor_folder", required=True)
    add_worker_options(parser)
    parser.add_argument("--unload", action="store_true", help="free the worker's GPU memory after each mesh")
    args = parser.parse_args()

    anchor_folder = Path(args.anchor_folder)
    any6d = any6d_functions()
    with worker_from(args) as worker:
        for obj in objects(anchor_folder):
            save_path = str(anchor_folder / obj)
            color = np.asarray(Image.open(os.path.join(save_path, "color.png")).convert("RGB"))
            mask = np.asarray(Image.open(os.path.join(save_path, "mask.png")).convert("RGB"))[..., 0].astype(bool)
            if any6d is not None:
                input_image = any6d_input(any6d, color, mask, save_path, obj)
            else:
                input_image = host_input(color, mask, save_path, obj)
            make_mesh(worker, input_image, save_path, obj, steps=args.steps)
            if args.unload:
                freed = worker.unload()
                print(f"unloaded {', '.join(freed.unloaded) or 'nothing'}")
            # Any6D goes on here: trimesh.load(mesh_{obj}.obj), align_mesh_to_coordinate, Any6D(mesh=...), ...
    return 0


if __name__ == "__main__":
    sys.exit(main())
