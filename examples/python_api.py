"""The Python API: one warm worker, views then a mesh, then a second object.

It uses the official weights (a missing file stops it at start, naming every place searched and how to get
the files); ``python examples/python_api.py --tiny`` runs the tiny preset's random models instead, anywhere.
"""

import sys
from pathlib import Path

from host import InstantMeshWorker

here, out = Path(__file__).parent, Path("outputs/api")
preset = "tiny" if "--tiny" in sys.argv[1:] else "official"
with InstantMeshWorker(preset=preset, progress=True) as worker:  # the models env; models load on first use
    print("model:", worker.model_label)  # "tiny (random weights, ...)" with --tiny
    # The photo is prepared in this process first (cut out, centred at 85 %; pillow/numpy), as the CLI does.
    mug = here / "inputs/mug.png"
    views = worker.generate_views(mug, num_inference_steps=30, save_grid=out / "mug_views.png", overwrite=True)
    mesh = worker.reconstruct(views, out / "mug.obj", overwrite=True)  # reuses the views held by the worker
    print(mesh.path, mesh.num_vertices, "vertices", {k: round(v, 2) for k, v in mesh.timings.items()})
    print(worker.image_to_mesh(here / "inputs/ball.png", out / "ball.glb", num_inference_steps=30, overwrite=True).path)
    # Many objects: map keeps requests in flight, so a batching worker (max_batch: 8 on CUDA) fills its batches
    # and writes one object's mesh while the GPU works on the next. Outcomes come back in order, failures in place.
    for outcome in worker.map(
        [here / "inputs" / f"{name}.png" for name in ("mug", "ball", "box")],
        out / "many",
        num_inference_steps=30,
        format="glb",
        overwrite=True,
    ):
        print(outcome.name, outcome.mesh.path if outcome.mesh else outcome.error)
