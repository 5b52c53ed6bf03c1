"""Finding the official weight files: explicit paths, environment variables, the folders where users keep
them (Any6D's ``instantmesh/ckpts/``, upstream's ``ckpts/``), then the Hugging Face cache.

Nothing is ever downloaded: the cache is read the way ``HF_HUB_OFFLINE=1`` would, by looking at the
snapshot folders on disk. A missing file is an error that names every place looked at, in one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ZERO123PLUS_REPO = "sudo-ai/zero123plus-v1.2"
INSTANTMESH_REPO = "TencentARC/InstantMesh"
WHITEBG_UNET_FILE = "diffusion_pytorch_model.bin"
LRM_FILES = {"large": "instant_mesh_large.ckpt", "base": "instant_mesh_base.ckpt"}
ZERO123PLUS_FOLDER = "zero123plus-v1.2"
"""The Zero123++ folder's name inside a checkpoint folder (ours: upstream reads it from the cache only)."""
CHECKPOINT_FOLDERS = ("instantmesh/ckpts", "ckpts")
"""Where users keep the files, relative to the application's working directory: Any6D's, then upstream's."""
ENV_ZERO123PLUS, ENV_UNET, ENV_LRM = "INSTANTMESH_ZERO123PLUS", "INSTANTMESH_UNET", "INSTANTMESH_LRM"


@dataclass(frozen=True)
class Place:
    """One place looked at: where the path came from, the path (None: a variable not set), and the verdict."""

    source: str
    path: Path | None
    found: bool

    def __str__(self) -> str:
        return f"{self.source}: {self.path if self.path is not None else 'not set'}"


@dataclass(frozen=True)
class WeightSearch:
    """Where one weight was looked for, in order; the search stops at the first place that has it."""

    name: str
    what: str
    download: str
    """The command that puts it where the search finds it."""
    places: tuple[Place, ...]

    @property
    def path(self) -> Path | None:
        return next((p.path for p in self.places if p.found), None)


class WeightsNotFound(FileNotFoundError):
    """Names each weight that is missing, every place searched for it in order, and how to get it (one line)."""

    def __init__(self, searches: list[WeightSearch]) -> None:
        self.searches = [s for s in searches if s.path is None]
        parts = [f"{s.what}: looked in {'; '.join(map(str, s.places))}" for s in self.searches]
        downloads = "; ".join(dict.fromkeys(s.download for s in self.searches))
        super().__init__(
            "official weights not found: "
            + " | ".join(parts)
            + f" | get them with: {downloads} (or give their paths: --zero123plus/--unet/--lrm, zero123plus=/unet=/lrm=,"
            f" ${ENV_ZERO123PLUS}/${ENV_UNET}/${ENV_LRM}; the tiny preset runs random models instead)"
        )


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


def _is_pipeline_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def _search(
    explicit: str | None, env: str, root: Path, repo: str, filename: str, is_ok: Callable[[Path], bool]
) -> tuple[Place, ...]:
    """A given path alone; else the variable, each checkpoint folder under ``root``, the cache's snapshots."""
    if explicit:
        given = Path(explicit).expanduser()
        return (Place("given path", given, is_ok(given)),)
    value = os.environ.get(env)
    candidates: list[tuple[str, Path | None]] = [(f"${env}", Path(value).expanduser() if value else None)]
    candidates += [(f"./{folder}", root / folder / filename) for folder in CHECKPOINT_FOLDERS]
    snapshots = hf_snapshots(repo)
    cache = f"Hugging Face cache ({repo})"
    if not snapshots:
        candidates.append((cache, hf_cache_dir() / f"models--{repo.replace('/', '--')}" / "snapshots"))
    candidates += [(cache, snap if filename == ZERO123PLUS_FOLDER else snap / filename) for snap in snapshots]
    places: list[Place] = []
    for source, path in candidates:
        found = path is not None and is_ok(path)
        places.append(Place(source, path, found))
        if found:
            break
    return tuple(places)


def search_weights(
    zero123plus: str | None = None,
    whitebg_unet: str | None = None,
    lrm: str | None = None,
    variant: str = "large",
    root: str | os.PathLike[str] | None = None,
) -> list[WeightSearch]:
    """Where each of the three official weights was looked for, in order. ``root``: the folder whose
    checkpoint folders (CHECKPOINT_FOLDERS) are searched; the working directory by default."""
    base = Path(root).expanduser().resolve() if root else Path.cwd()
    lrm_file = LRM_FILES[variant]
    get_instantmesh = f"huggingface-cli download {INSTANTMESH_REPO} {WHITEBG_UNET_FILE} {lrm_file}"
    return [
        WeightSearch(
            "zero123plus",
            f"the Zero123++ v1.2 diffusers folder ({ZERO123PLUS_REPO}, with model_index.json)",
            f"huggingface-cli download {ZERO123PLUS_REPO}",
            _search(zero123plus, ENV_ZERO123PLUS, base, ZERO123PLUS_REPO, ZERO123PLUS_FOLDER, _is_pipeline_folder),
        ),
        WeightSearch(
            "unet",
            f"the InstantMesh white-background UNet ({WHITEBG_UNET_FILE})",
            get_instantmesh,
            _search(whitebg_unet, ENV_UNET, base, INSTANTMESH_REPO, WHITEBG_UNET_FILE, Path.is_file),
        ),
        WeightSearch(
            "lrm",
            f"the InstantMesh LRM checkpoint ({lrm_file})",
            get_instantmesh,
            _search(lrm, ENV_LRM, base, INSTANTMESH_REPO, lrm_file, Path.is_file),
        ),
    ]


def resolve_weights(
    zero123plus: str | None = None,
    whitebg_unet: str | None = None,
    lrm: str | None = None,
    variant: str = "large",
    root: str | os.PathLike[str] | None = None,
) -> WeightPaths:
    """The three official weight locations, or WeightsNotFound naming every one missing."""
    searches = search_weights(zero123plus, whitebg_unet, lrm, variant, root)
    folder, unet, ckpt = (s.path for s in searches)
    if folder is None or unet is None or ckpt is None:
        raise WeightsNotFound(searches)
    return WeightPaths(folder, unet, ckpt)
