"""One object in a fresh process, the way a subprocess-per-object pipeline runs it: start Python, import
torch and the models, load both, run, write the mesh, exit. Prints one JSON line of wall-clock stamps.

``python -m benchmarks.one_object IMAGE MESH --zero123plus DIR --unet FILE --lrm FILE [--steps N]``
"""

from __future__ import annotations

import time

STARTED = time.time()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("image")
    parser.add_argument("mesh")
    parser.add_argument("--zero123plus", required=True)
    parser.add_argument("--unet", required=True)
    parser.add_argument("--lrm", required=True)
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--config", default=None, help="LRM config (default: instant-mesh-large)")
    parser.add_argument("--view-size", type=int, default=None)
    args = parser.parse_args()
    stamps: dict[str, float] = {"started": STARTED}

    import torch

    from instantmesh.export import write_mesh
    from rpcworker.backends.base import SilentContext
    from rpcworker.backends.instantmesh import InstantMeshBackend, resolve_model_files
    from rpcworker.images import load_input_image
    from rpcworker.options import WorkerOptions
    from rpcworker.wire.messages import ImagePath

    stamps["imported"] = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        torch.zeros(1, device=device)
        torch.cuda.synchronize()
    stamps["cuda_ready"] = time.time()
    files = resolve_model_files(
        WorkerOptions(
            preset="official",
            zero123plus=args.zero123plus,
            unet=args.unet,
            lrm=args.lrm,
            config=args.config,
            view_size=args.view_size,
        )
    )
    backend = InstantMeshBackend(files, device, max_batch=1)
    ctx = SilentContext()
    backend.load(["views"], ctx)
    stamps["views_loaded"] = time.time()
    backend.load(["mesh"], ctx)
    stamps["mesh_loaded"] = time.time()
    image = load_input_image(ImagePath(args.image))
    views = backend.generate_views(image, 42, args.steps, 4.0, ctx)
    stamps["views_done"] = time.time()
    mesh = backend.reconstruct(views.views, False, ctx)
    stamps["mesh_done"] = time.time()
    write_mesh(args.mesh, "obj", mesh.vertices, mesh.faces, mesh.vertex_colors)
    stamps["exported"] = time.time()
    stamps["peak_gpu_bytes"] = torch.cuda.max_memory_allocated() if device == "cuda" else 0
    print(json.dumps(stamps), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
