"""Finding the official weight files: explicit paths, then environment variables, then the Hugging Face cache.

Nothing is ever downloaded: the cache is read the way ``HF_HUB_OFFLINE=1`` would, by looking at the
snapshot folders on disk. A missing file is an error that names every place looked at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ZERO123PLUS_REPO = "sudo-ai/zero123plus-v1.2"
INSTANTMESH_REPO = "TencentARC/InstantMesh"
WHITEBG_UNET_FILE = "diffusion_pytorch_model.bin"
LRM_FILES = {"large": "instant_mesh_large.ckpt", "base": "instant_mesh_base.ckpt"}


class WeightsNotFound(FileNotFoundError):
    """Names each weight that is missing and every place that was searched for it, in order."""

    def __init__(self, missing: dict[str, list[str]], hint: str) -> None:
        self.missing = missing
        parts = [
            f"{what} not found. Looked in:\n" + "\n".join(f"  - {p}" for p in places)
            for what, places in missing.items()
        ]
        super().__init__("\n".join(parts) + "\n" + hint)


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "huggingface"
    )
    return Path(home) / "hub"


def hf_snapshots(repo: str) -> list[Path]:
    """Snapshot folders of a cached repo, the one ``refs/main`` names first."""
    root = hf_cache_dir() / f"models--{repo.replace('/', '--')}"
    snapshots = root / "snapshots"
    if not snapshots.is_dir():
        return []
    ordered = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    ref = root / "refs" / "main"
    if ref.is_file():
        main = snapshots / ref.read_text().strip()
        ordered = [main] + [p for p in ordered if p != main] if main.is_dir() else ordered
    return ordered


@dataclass(frozen=True)
class WeightPaths:
    zero123plus: Path
    whitebg_unet: Path
    lrm: Path


def _first(candidates: list[tuple[str, Path | None]], is_ok) -> tuple[Path | None, list[str]]:
    searched = []
    for label, path in candidates:
        if path is None:
            searched.append(f"{label}: not set")
            continue
        searched.append(f"{label}: {path}")
        if is_ok(path):
            return path, searched
    return None, searched


def _candidates(explicit: str | None, env: str, repo: str, filename: str | None) -> list[tuple[str, Path | None]]:
    out: list[tuple[str, Path | None]] = []
    if explicit:
        out.append(("given path", Path(explicit).expanduser()))
        return out
    value = os.environ.get(env)
    out.append((f"${env}", Path(value).expanduser() if value else None))
    snapshots = hf_snapshots(repo)
    if not snapshots:
        out.append(
            (f"Hugging Face cache ({repo})", hf_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots")
        )
    for snap in snapshots:
        out.append((f"Hugging Face cache ({repo})", snap / filename if filename else snap))
    return out


def resolve_weights(
    zero123plus: str | None = None,
    whitebg_unet: str | None = None,
    lrm: str | None = None,
    variant: str = "large",
) -> WeightPaths:
    """The three official weight locations, or WeightsNotFound for the first one missing."""
    hint = (
        "Point the worker at the files (--zero123plus DIR --unet FILE --lrm FILE, or the environment variables "
        "INSTANTMESH_ZERO123PLUS, INSTANTMESH_UNET, INSTANTMESH_LRM), or use --preset tiny for random tiny models."
    )
    missing: dict[str, list[str]] = {}
    folder, searched = _first(
        _candidates(zero123plus, "INSTANTMESH_ZERO123PLUS", ZERO123PLUS_REPO, None),
        lambda p: (p / "model_index.json").is_file(),
    )
    if folder is None:
        missing[f"the Zero123++ v1.2 diffusers folder ({ZERO123PLUS_REPO}, with model_index.json)"] = searched
    unet, searched = _first(
        _candidates(whitebg_unet, "INSTANTMESH_UNET", INSTANTMESH_REPO, WHITEBG_UNET_FILE), Path.is_file
    )
    if unet is None:
        missing[f"the InstantMesh white-background UNet ({WHITEBG_UNET_FILE})"] = searched
    ckpt, searched = _first(_candidates(lrm, "INSTANTMESH_LRM", INSTANTMESH_REPO, LRM_FILES[variant]), Path.is_file)
    if ckpt is None:
        missing[f"the InstantMesh LRM checkpoint ({LRM_FILES[variant]})"] = searched
    if missing:
        raise WeightsNotFound(missing, hint)
    assert folder and unet and ckpt
    return WeightPaths(folder, unet, ckpt)
