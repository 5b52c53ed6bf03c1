"""Finding the official weight files: explicit paths, environment variables, the folders where users keep
them (Any6D's ``instantmesh/ckpts/``, upstream's ``ckpts/``), then the Hugging Face cache.

Nothing is downloaded here: the cache is read the way ``HF_HUB_OFFLINE=1`` would, by looking at the
snapshot folders on disk. A missing file is an error that names every place looked at, in one line, and the one
command that downloads them (``FETCH_COMMAND``: ``instantmesh.fetch``, run by the host, puts them where this search
looks). Also here: which files of the official repos the loaders read (``zero123plus_files``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
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
FETCH_COMMAND = "instantmesh-rpc fetch-weights"
"""The one command that downloads the official weights into the Hugging Face cache, where the search finds them."""

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json")
"""How a diffusers/transformers weights file (or a sharded one's index) is named."""
SAFETENSORS_SUFFIXES = (".safetensors", ".safetensors.index.json")
"""The weights files the Zero123++ components are read from: never their pickles (``instantmesh.safetensors_only``)."""
ZERO123PLUS_LOADED = ("vae", "text_encoder", "vision_encoder")
"""Components of the Zero123++ folder whose weights ``load_zero123plus`` reads."""
ZERO123PLUS_CONFIG_ONLY = ("unet",)
"""Components of which only ``config.json`` is read: the white-background UNet replaces every weight of the UNet."""
ZERO123PLUS_WHOLE = ("tokenizer", "scheduler", "feature_extractor_clip", "feature_extractor_vae")
"""Folders of small files read whole."""
ZERO123PLUS_INDEX = "model_index.json"
"""The file that makes a folder a pipeline folder for the search: fetched last, so a broken fetch is never found."""


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
    """The Hugging Face cache as huggingface_hub finds it: ``HF_HUB_CACHE``, the older ``HUGGINGFACE_HUB_CACHE``
    (the only one huggingface_hub 0.17 reads, as upstream InstantMesh pins it), else ``HF_HOME/hub``."""
    for variable in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
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
    return [
        WeightSearch(
            "zero123plus",
            f"the Zero123++ v1.2 diffusers folder ({ZERO123PLUS_REPO}, with model_index.json)",
            FETCH_COMMAND,
            _search(zero123plus, ENV_ZERO123PLUS, base, ZERO123PLUS_REPO, ZERO123PLUS_FOLDER, _is_pipeline_folder),
        ),
        WeightSearch(
            "unet",
            f"the InstantMesh white-background UNet ({WHITEBG_UNET_FILE})",
            FETCH_COMMAND,
            _search(whitebg_unet, ENV_UNET, base, INSTANTMESH_REPO, WHITEBG_UNET_FILE, Path.is_file),
        ),
        WeightSearch(
            "lrm",
            f"the InstantMesh LRM checkpoint ({lrm_file})",
            FETCH_COMMAND,
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


def is_fp16_variant(name: str) -> bool:
    """``model.fp16.safetensors`` or a shard of one (``...fp16-00001-of-00002...``): diffusers' ``variant="fp16"``."""
    return ".fp16." in name or ".fp16-" in name


def zero123plus_files(names: Iterable[str]) -> list[str]:
    """The files of the Zero123++ repo (``names``: its file list) that ``load_zero123plus`` reads with the
    white-background UNet, ``model_index.json`` last.

    Per loaded component: its ``config.json`` and one set of safetensors weights (pickles are never loaded, so never
    fetched), the full-precision files over the ``fp16`` variant when the repo has both (the loader casts).
    Raises ValueError naming a component whose config or safetensors weights the list lacks.
    """
    by_folder: dict[str, list[str]] = {}
    for name in names:
        folder, _, rest = name.partition("/")
        if rest and "/" not in rest:
            by_folder.setdefault(folder, []).append(rest)
    if ZERO123PLUS_INDEX not in names:
        raise ValueError(f"{ZERO123PLUS_INDEX} is missing: not a diffusers pipeline repo")
    chosen = [f"{folder}/{rest}" for folder in ZERO123PLUS_WHOLE for rest in sorted(by_folder.get(folder, []))]
    for folder in ZERO123PLUS_CONFIG_ONLY + ZERO123PLUS_LOADED:
        files = by_folder.get(folder, [])
        if "config.json" not in files:
            raise ValueError(f"{folder}/config.json is missing")
        chosen.append(f"{folder}/config.json")
        if folder in ZERO123PLUS_LOADED:
            weights = _loaded_weights(files)
            if not weights:
                raise ValueError(
                    f"{folder}/ has no safetensors weights ({', '.join('*' + s for s in SAFETENSORS_SUFFIXES)}); "
                    "pickled weights are never loaded"
                )
            chosen += [f"{folder}/{name}" for name in weights]
    return chosen + [ZERO123PLUS_INDEX]


def _loaded_weights(files: list[str]) -> list[str]:
    safetensors = [name for name in files if name.endswith(SAFETENSORS_SUFFIXES)]
    plain = [name for name in safetensors if not is_fp16_variant(name)]
    return sorted(plain or safetensors)
