"""The views bundle: a start of the packaged networks from their packages alone, no diffusers, transformers or module.

Importing diffusers and transformers is most of a cached start that builds the modules (see docs/benchmarks.md,
'The views bundle').
Once every network of the views runs as an AOTInductor package (the step, the VAE's decoder and encoder, the CLIP
image embedding), what a start needs of them is their weights. After a start that ran all four as packages the
bundle is written beside them: one safetensors file of every constant the packages are bound to, as they run
(dtype; strides are restored at load), and a manifest naming the packages, the code's fingerprint, the prompts
whose embeddings are kept (the empty one) and the source files it was made from (size, mtime, inode).

The manifest is the cache's record (`rpcworker.wire.cache.CacheRecord`) of the constants file: written last and
removed first, so a bundle is whole or absent. A start uses it only when the manifest matches the code, the
options (the folder is the compile cache's, keyed by torch, GPU, weights and options), every source file and the
constants file (hashed whole when written, its stamp checked at each start; its header); anything else is
ignored and the normal start writes the bundle again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import msgspec
import torch

from rpcworker.wire.cache import CacheMiss, CacheRecord, atomic_file, check_record, describe_files, write_record

from ...device_read import check_header, read_safetensors
from ...weights_file import CheckpointError
from .ahead_of_time import module_tensors
from .packaged import PACKAGED_PARTS, PackagedNetworks, PackageSetup, constant_group

log = logging.getLogger("instantmesh.views_bundle")

BUNDLE_FORMAT = 3
"""2: constants stored once per group of packages bound to the same weights (`packaged.CONSTANT_GROUPS`); 3: the
step's row counts recorded (a build stopped after its first stage leaves a bundle for one object alone)."""
MANIFEST_NAME = "views-bundle.json"
CONSTANTS_NAME = "views-bundle.safetensors"
PROMPT_KEY = "prompt/{index}"
"""The constants file's key of a kept prompt's embedding (its index in the manifest's prompts)."""


class SourceFile(msgspec.Struct, frozen=True):
    path: str
    size: int
    mtime_ns: int
    inode: int


class BundleNotes(msgspec.Struct, frozen=True):
    """What the manifest keeps besides the constants file's facts."""

    sources: list[SourceFile]
    packages: dict[str, list[str]]
    """Package prefix (`packaged.PACKAGED_PARTS`) -> the package files it ran."""
    strides: dict[str, list[int]]
    """Constants stored contiguous that run with other strides (channels_last weights), by key (group/FQN)."""
    prompts: list[str]
    row_counts: list[int]
    """The step's batch sizes in rows (objects x guidance halves) its packages ran at."""


BundleManifest = CacheRecord[BundleNotes]
"""Its versions: the bundle's format, the packages' code (`ahead_of_time.code_fingerprint`) and the dtype."""


def bundle_versions(fingerprint: str, dtype: torch.dtype) -> dict[str, str]:
    return {"bundle": str(BUNDLE_FORMAT), "fingerprint": fingerprint, "dtype": str(dtype).removeprefix("torch.")}


def describe_sources(zero123plus: Path, whitebg_unet: Path) -> list[SourceFile]:
    """Every file the views are made from: the Zero123++ folder's (configs, weights; hidden ones aside) and the UNet."""
    files = sorted(
        p
        for p in zero123plus.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(zero123plus).parts)
    )
    described = []
    for path in [*files, whitebg_unet]:
        stat = path.stat()
        described.append(SourceFile(str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino))
    return described


def write_views_bundle(
    networks: PackagedNetworks, folder: Path, sources: Sequence[SourceFile], fingerprint: str
) -> Path:
    """Write the bundle of `networks`, made from the modules and warmed up (every package loaded), into `folder`."""
    parts = networks.parts
    missing = sorted(prefix for prefix, part in parts.items() if not part.loaded or part.module is None)
    if missing:
        raise ValueError(f"the views' {', '.join(missing)} have not run as packages of their modules: no bundle")
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    strides: dict[str, list[int]] = {}
    for prefix, part in parts.items():
        assert part.module is not None
        own = module_tensors(part.module)
        for fqn in sorted(part.bound):
            key, tensor = f"{constant_group(prefix)}/{fqn}", own[fqn].detach()
            if key in tensors:  # another package of the group is bound to the same tensor
                continue
            if not tensor.is_contiguous():
                strides[key] = list(tensor.stride())
            tensors[key] = tensor.to("cpu").contiguous()
    prompts = sorted(networks.prompts)
    for index, prompt in enumerate(prompts):
        tensors[PROMPT_KEY.format(index=index)] = networks.prompts[prompt].detach().to("cpu").contiguous()
    manifest_path, constants_path = folder / MANIFEST_NAME, folder / CONSTANTS_NAME
    manifest_path.unlink(missing_ok=True)  # from here on no manifest vouches for a half-written constants file
    with atomic_file(constants_path) as partial:
        save_file(tensors, str(partial))
    packages = {prefix: list(part.loaded) for prefix, part in sorted(parts.items())}
    notes = BundleNotes(list(sources), packages, strides, prompts, list(networks.batched.row_counts))
    versions = bundle_versions(fingerprint, networks.dtype)
    write_record(
        manifest_path, BundleManifest(versions=versions, files=describe_files(folder, [CONSTANTS_NAME]), notes=notes)
    )
    return manifest_path


def valid_manifest(
    folder: Path, sources: Sequence[SourceFile], fingerprint: str, dtype: torch.dtype
) -> BundleManifest | None:
    """The folder's bundle manifest when the bundle is whole and made from this code and these sources, else None
    (with the reason logged). Raises `CacheNotPrivate` when the folder is not private."""
    manifest_path, constants_path = folder / MANIFEST_NAME, folder / CONSTANTS_NAME
    if not manifest_path.is_file():
        return None
    reason = None
    try:
        manifest = check_record(manifest_path, BundleManifest, bundle_versions(fingerprint, dtype))
        notes = manifest.notes
        if notes.sources != list(sources):
            reason = "made from other weight files (or they changed since)"
        elif set(notes.packages) != set(PACKAGED_PARTS) or not all(notes.packages.values()):
            reason = f"it lacks packages for {sorted(set(PACKAGED_PARTS) - set(notes.packages))}"
        else:
            check_header(constants_path)
    except CacheMiss as miss:
        reason = str(miss)
    except (OSError, CheckpointError) as exc:
        reason = f"its constants file is damaged ({exc})"
    if reason is not None:
        log.info("views bundle %s not used: %s", manifest_path, reason)
        return None
    return manifest


def read_constants(
    folder: Path, manifest: BundleManifest, device: torch.device
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """The bundle's constants on `device`, by package prefix and FQN, with their strides (the packages of a group
    share the same tensors); and the kept prompts' embeddings."""
    tensors = read_safetensors(folder / CONSTANTS_NAME, device)
    by_group: dict[str, dict[str, torch.Tensor]] = {constant_group(prefix): {} for prefix in manifest.notes.packages}
    prompts = {
        prompt: tensors.pop(PROMPT_KEY.format(index=index)) for index, prompt in enumerate(manifest.notes.prompts)
    }
    for key, tensor in tensors.items():
        group, _, fqn = key.partition("/")
        if group not in by_group:
            raise ValueError(f"views bundle constant {key!r} belongs to no package")
        stride = manifest.notes.strides.get(key)
        if stride is not None:
            tensor = torch.empty_strided(tensor.shape, stride, dtype=tensor.dtype, device=tensor.device).copy_(tensor)
        elif (
            device.type == "cpu"
        ):  # memory-mapped at the file's offsets: compiled CPU kernels round otherwise when unaligned
            tensor = tensor.clone()
        by_group[group][fqn] = tensor
    return {prefix: by_group[constant_group(prefix)] for prefix in manifest.notes.packages}, prompts


def networks_from_bundle(
    folder: Path, manifest: BundleManifest, setup: PackageSetup, dtype: torch.dtype, row_counts: Sequence[int]
) -> PackagedNetworks:
    """The packaged networks bound to the bundle's constants; the packages load at their first calls (the backend's
    warm-up), and one that is missing raises `ahead_of_time.PackageUnavailable` there."""
    constants, prompts = read_constants(folder, manifest, setup.device)
    return PackagedNetworks.from_constants(constants, prompts, setup, dtype, row_counts)
