"""The tiny preset: our real model classes at tiny sizes with seeded random weights.

It lets every command run end to end on a machine without the official weights (and in tests). The
weights are written once, in the official file layouts, to a cache folder and then loaded by the same
code that loads the real files, so the tiny path exercises the real loaders. Its results are noise and
are labelled as such everywhere. The folder is the cache's (`rpcworker.wire.cache`): private, and used only
while its record vouches for every file in it (a damaged one is made again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rpcworker.wire.cache import (
    CacheMiss,
    CacheRecord,
    cache_root,
    check_files,
    describe_files,
    private_folder,
    read_record,
    version_difference,
    write_record,
)

from .weights import WeightPaths

TINY_LABEL = "tiny (random weights, NOT the official models: outputs are noise)"
TINY_VERSION = 2
"""2: every component in safetensors (transformers 4.34 saved the CLIP encoders as pickles, which are never loaded)."""
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TINY_SEED = 20240601
RECORD_NAME = "record.json"
"""The tiny folder's record (`rpcworker.wire.cache.CacheRecord`) of every file in it, written last."""
TinyRecord = CacheRecord[None]
log = logging.getLogger(__name__)


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
    """``tiny-v2-<hash>``: environments with different libraries never share (and silently misread) a cache."""
    digest = hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:12]
    return f"tiny-v{TINY_VERSION}-{digest}"


class TinyCacheMismatch(RuntimeError):
    """A tiny cache folder whose record does not say what its name promises."""


def ensure_tiny_weights(root: Path | None = None) -> TinyWeights:
    """Builds the tiny weights on first use (a few seconds) and returns where they are.

    The folder is named by the versions that produce it and holds a record of them and of its files; a record
    whose versions disagree (a folder copied between environments) is refused, naming both sets; a folder
    without a record, or with a file that is not as recorded, is made again.
    """
    versions = producer_versions()
    folder = private_folder(root or cache_root())
    target = folder / cache_key(versions)
    paths = TinyWeights(
        WeightPaths(
            target / "zero123plus",
            target / "whitebg_unet" / "diffusion_pytorch_model.bin",
            target / "instant_mesh_tiny.ckpt",
        ),
        CONFIG_DIR / "tiny.yaml",
    )
    try:
        _check(target, versions)
        return paths
    except CacheMiss as miss:
        if target.exists():
            log.warning("making the tiny weights again: %s", miss)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder))
    try:
        _write_tiny(staging)
        files = [str(p.relative_to(staging)) for p in sorted(staging.rglob("*")) if p.is_file()]
        record = TinyRecord(versions=versions, files=describe_files(staging, files), notes=None)
        write_record(staging / RECORD_NAME, record)
        _publish(staging, target, versions)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def _check(target: Path, versions: dict[str, str]) -> None:
    """Raises CacheMiss unless the folder's record vouches for it, TinyCacheMismatch when the record was made by
    other versions."""
    record = read_record(target / RECORD_NAME, TinyRecord)
    if version_difference(record, versions) is not None:
        raise TinyCacheMismatch(
            f"tiny weights in {target} were made by {record.versions} but this environment has {versions}; "
            "delete that folder to rebuild it"
        )
    check_files(target / RECORD_NAME, record)


def _publish(staging: Path, target: Path, versions: dict[str, str]) -> None:
    """`staging` becomes `target`, unless a concurrent builder's complete folder is there first."""
    try:
        os.rename(staging, target)
        return
    except OSError:
        try:
            _check(target, versions)
            return
        except CacheMiss:
            pass
    old = Path(tempfile.mkdtemp(prefix=".tiny-old-", dir=target.parent))
    os.rename(target, old / target.name)  # a folder without a (valid) record: ours to replace
    try:
        os.rename(staging, target)
    finally:
        shutil.rmtree(old, ignore_errors=True)


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
