"""The CPU's own work in a views call before the networks: the condition image's inputs, the processor's arithmetic
against the per-value table.

``python -m benchmarks.views_host_work [--repeats 50] [--out benchmarks/results/cpu-dev]``

While the CPU makes the condition image's inputs, the GPU has nothing to do yet, so this adds to every object's
views time on any GPU. Per processor: the arithmetic as the processor writes it (`ImageInputs.float_steps` on the
resized, cropped pixels) against `ImageInputs` itself, which looks each 8-bit value up in a table made by that
arithmetic. Both include PIL's resize. Fastest of `--repeats` runs, one thread.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parents[1] / "instantmesh/configs/zero123plus-v1.2.json"
"""The published configs, the two image processors' among them."""


def fastest(call: Callable[[], Any], repeats: int) -> float:
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu-dev"))
    args = parser.parse_args(argv)
    import numpy as np
    import torch
    from PIL import Image

    from instantmesh.zero123plus.image_inputs import ImageInputs, to_rgb_on_white
    from instantmesh.zero123plus.loading import load_configs

    from .common import synthetic_object, table, write_results

    torch.set_num_threads(1)
    configs = load_configs(CONFIGS)
    with tempfile.TemporaryDirectory() as folder:
        image = to_rgb_on_white(Image.open(synthetic_object(Path(folder) / "object.png", 0)))
    rows, results = [], {}
    for name in ("feature_extractor_vae", "feature_extractor_clip"):
        inputs = ImageInputs.from_config(configs[f"{name}/preprocessor_config.json"])
        assert inputs.shortest_edge is not None and inputs.crop is not None

        def arithmetic(inputs: ImageInputs = inputs) -> torch.Tensor:
            pixels = inputs.float_steps(inputs.pixels(image))
            return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None]

        assert torch.equal(arithmetic(), inputs(image))
        old, new = fastest(arithmetic, args.repeats), fastest(lambda inputs=inputs: inputs(image), args.repeats)
        results[name] = {"arithmetic_s": old, "looked_up_s": new, "size": inputs.crop}
        rows.append([f"{name}: {inputs.crop[0]}x{inputs.crop[1]} input, arithmetic -> looked up", old * 1e3, new * 1e3])
    write_results(args.out, "views_host_work", {"repeats": args.repeats, "threads": 1, "results": results})
    text = table("The condition image's inputs on the CPU (one thread, fastest run)", ["what", "before ms", "now ms"], rows)
    print(text, flush=True)
    (args.out / "views_host_work.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
