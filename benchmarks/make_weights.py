"""Full-size random weights in the official file layouts, for benchmarks on a machine without the real ones.

Writes, under OUT:
- ``zero123plus-v1.2/``: a diffusers folder in the sudo-ai/zero123plus-v1.2 layout (fp16 safetensors),
- ``diffusion_pytorch_model.bin``: the white-background UNet as a raw state dict saved with torch.save,
- ``instant_mesh_large.ckpt``: a Lightning-style checkpoint with the LRM under ``lrm_generator.``.

Random values are drawn on the GPU when there is one (seconds instead of minutes). ``--tiny`` links the
tiny preset's files under the same names instead, with its LRM config as ``lrm-config.yaml``: a folder the
benchmarks accept like the full-size one, to smoke-test them on a CPU in seconds.
``python -m benchmarks.make_weights OUT [--tiny]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from instantmesh.lrm.checkpoint import save_lrm_checkpoint
from instantmesh.lrm.config import preset_path
from instantmesh.lrm.model import InstantMeshLRM
from instantmesh.zero123plus.loading import (
    build_zero123plus_models,
    build_zero123plus_unet,
    write_placeholder_clip_tokenizer,
)

CONFIGS = Path(__file__).resolve().parent.parent / "instantmesh" / "configs"


def write_zero123plus(folder: Path, device: str) -> None:
    configs = json.loads((CONFIGS / "zero123plus-v1.2.json").read_text())
    torch.manual_seed(0)
    models = build_zero123plus_models(configs, device=device)
    for name, module in models.items():
        module.to(torch.float16).save_pretrained(folder / name, safe_serialization=True)
    for name in (
        "model_index.json",
        "scheduler/scheduler_config.json",
        "feature_extractor_clip/preprocessor_config.json",
        "feature_extractor_vae/preprocessor_config.json",
    ):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(json.dumps(configs[name], indent=1))
    text = configs["text_encoder/config.json"]
    write_placeholder_clip_tokenizer(folder / "tokenizer", text["vocab_size"], text.get("max_position_embeddings", 77))


def write_whitebg_unet(path: Path, device: str) -> None:
    """Saved in float16 to halve the bytes every benchmark process reads; loading casts to the pipeline dtype."""
    configs = json.loads((CONFIGS / "zero123plus-v1.2.json").read_text())
    torch.manual_seed(1)
    unet = build_zero123plus_unet(configs["unet/config.json"], device=device).to(torch.float16)
    torch.save({k: v.cpu() for k, v in unet.state_dict().items()}, path)


def write_lrm(path: Path, device: str) -> None:
    torch.manual_seed(2)
    with torch.device(device):
        lrm = InstantMeshLRM.from_config(preset_path("instant-mesh-large"))
    save_lrm_checkpoint(lrm.state_dict(), path)


def link_tiny(out: Path) -> None:
    from instantmesh.tiny import ensure_tiny_weights

    tiny = ensure_tiny_weights()
    for name, source in (
        ("zero123plus-v1.2", tiny.paths.zero123plus),
        ("diffusion_pytorch_model.bin", tiny.paths.whitebg_unet),
        ("instant_mesh_large.ckpt", tiny.paths.lrm),
        ("lrm-config.yaml", tiny.config),
    ):
        (out / name).unlink(missing_ok=True)
        (out / name).symlink_to(source.resolve())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--tiny", action="store_true", help="link the tiny preset's files instead (CPU smoke tests)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.out.mkdir(parents=True, exist_ok=True)
        link_tiny(args.out)
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    for name, step in (
        ("zero123plus-v1.2", lambda: write_zero123plus(args.out / "zero123plus-v1.2", device)),
        ("diffusion_pytorch_model.bin", lambda: write_whitebg_unet(args.out / "diffusion_pytorch_model.bin", device)),
        ("instant_mesh_large.ckpt", lambda: write_lrm(args.out / "instant_mesh_large.ckpt", device)),
    ):
        start = time.perf_counter()
        step()
        print(f"wrote {name} in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
