"""The tiny preset: our real model classes at tiny sizes with seeded random weights.

It lets every command run end to end on a machine without the official weights (and in tests). The
weights are written once, in the official file layouts, to a cache folder and then loaded by the same
code that loads the real files, so the tiny path exercises the real loaders. Its results are noise and
are labelled as such everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rpcworker.wire.cache import cache_root

from .weights import WeightPaths

TINY_LABEL = "tiny (random weights, NOT the official models: outputs are noise)"
TINY_VERSION = 1
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TINY_SEED = 20240601


@dataclass(frozen=True)
class TinyWeights:
    paths: WeightPaths
    config: Path


PRODUCERS = ("torch", "diffusers", "transformers", "safetensors")
"""The libraries whose versions decide the files' layout (transformers 5 saves CLIP without ``text_model.``)."""


def producer_versions() -> dict[str, str]:
    """What would produce (and read) the tiny files here: our format version and the libraries' versions."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"format": str(TINY_VERSION)}
    for name in PRODUCERS:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "none"
    return versions


def cache_key(versions: dict[str, str]) -> str:
    """``tiny-v1-<hash>``: environments with different libraries never share (and silently misread) a cache."""
    digest = hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:12]
    return f"tiny-v{TINY_VERSION}-{digest}"


class TinyCacheMismatch(RuntimeError):
    """A tiny cache folder whose manifest does not say what its name promises."""


def ensure_tiny_weights(root: Path | None = None) -> TinyWeights:
    """Builds the tiny weights on first use (a few seconds) and returns where they are.

    The folder is named by the versions that produce it and holds a ``complete`` manifest of them; a
    manifest that disagrees (a folder copied between environments) is refused, naming both sets.
    """
    versions = producer_versions()
    target = (root or cache_root()) / cache_key(versions)
    paths = TinyWeights(
        WeightPaths(
            target / "zero123plus",
            target / "whitebg_unet" / "diffusion_pytorch_model.bin",
            target / "instant_mesh_tiny.ckpt",
        ),
        CONFIG_DIR / "tiny.yaml",
    )
    if (target / "complete").is_file():
        _check_manifest(target / "complete", versions)
        return paths
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        _write_tiny(staging)
        (staging / "complete").write_text(json.dumps(versions, sort_keys=True) + "\n")
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "complete").is_file():  # not a concurrent builder that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def _check_manifest(manifest: Path, versions: dict[str, str]) -> None:
    try:
        recorded = json.loads(manifest.read_text())
    except ValueError:
        recorded = None
    if recorded != versions:
        raise TinyCacheMismatch(
            f"tiny weights in {manifest.parent} were made by {recorded} but this environment has {versions}; delete that folder to rebuild it"
        )


def _write_tiny(folder: Path) -> None:
    import torch

    from .lrm.checkpoint import save_lrm_checkpoint
    from .lrm.model import InstantMeshLRM
    from .zero123plus.loading import build_zero123plus_unet, write_random_zero123plus_folder

    configs = json.loads((CONFIG_DIR / "zero123plus-tiny.json").read_text())
    write_random_zero123plus_folder(folder / "zero123plus", configs, dtype=torch.float32, seed=TINY_SEED)
    torch.manual_seed(TINY_SEED + 1)
    unet = build_zero123plus_unet(configs["unet/config.json"], device="cpu")
    (folder / "whitebg_unet").mkdir()
    torch.save(unet.state_dict(), folder / "whitebg_unet" / "diffusion_pytorch_model.bin")

    torch.manual_seed(TINY_SEED + 2)
    lrm = InstantMeshLRM.from_config(CONFIG_DIR / "tiny.yaml").eval()
    _make_surface_cross_zero(lrm)
    save_lrm_checkpoint(lrm.state_dict(), folder / "instant_mesh_tiny.ckpt")


def _make_surface_cross_zero(lrm) -> None:
    """Rescales the SDF head so that about 40% of the grid is inside for a typical input.

    A randomly initialised SDF is almost never zero anywhere, which would make every tiny mesh the
    fallback shape; a surface that crosses zero gives meshes with real topology.
    """
    import torch

    from .cameras import zero123plus_input_cameras

    lrm.init_flexicubes_geometry("cpu")
    size = lrm.config.encoder.image_size + lrm.config.encoder.patch_size
    generator = torch.Generator().manual_seed(TINY_SEED + 3)
    images = 0.5 + 0.2 * torch.randn(1, 6, 3, size, size, generator=generator)
    with torch.no_grad():
        planes = lrm.forward_planes(images.clamp(0, 1), zero123plus_input_cameras(batch_size=1))
        sdf = lrm.get_sdf_deformation_prediction(planes)[0].flatten()
        head = lrm.synthesizer.decoder.net_sdf[-1]
        scale = 1.0 / float(sdf.std())
        head.weight.mul_(scale)
        head.bias.mul_(scale)
        head.bias.sub_(float(torch.quantile(sdf * scale, 0.4)))
    lrm.geometry = None
