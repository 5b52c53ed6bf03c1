"""``python -m instantmesh.fetch [--dir DIR]``: downloads the official weights with huggingface_hub, then checks them.

The host runs it in the worker's environment, with the worker's code on its path (``instantmesh-rpc fetch-weights``).
It fetches only what the loaders read: from ``sudo-ai/zero123plus-v1.2`` the files ``weights.zero123plus_files``
picks (``model_index.json`` last, so a fetch that breaks leaves no folder the search accepts), and from
``TencentARC/InstantMesh`` the white-background UNet and the LRM checkpoint. By default they go into the Hugging Face
cache (``HF_HUB_CACHE``/``HF_HOME``), where the worker's search finds them; with ``--dir DIR`` into
``DIR/zero123plus-v1.2/``, ``DIR/diffusion_pytorch_model.bin`` and ``DIR/instant_mesh_large.ckpt``, the layout of a
checkpoint folder. Each file arrives whole or not at all (huggingface_hub writes it under another name and moves it
in place). A transfer that breaks is resumed with an HTTP Range request: from the partial file huggingface_hub kept
(0.17 to 0.23 at least, asked with ``resume_download`` before 0.23), which this module tries again; 2.4 retries
within its own call and deletes the partial file when it gives up or the run is stopped.

Progress goes to stderr: huggingface_hub's bar on a terminal, one line per file otherwise. The result is one JSON line
on stdout: ``{"ok": true, "files": [...], ...}`` or ``{"ok": false, "error": "<one line>"}`` (exit status 1).
Then each file is checked with our loaders (``instantmesh.weights_check``).
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .weights import (
    INSTANTMESH_REPO,
    LRM_FILES,
    WHITEBG_UNET_FILE,
    ZERO123PLUS_FOLDER,
    ZERO123PLUS_INDEX,
    ZERO123PLUS_REPO,
    hf_cache_dir,
    search_weights,
    zero123plus_files,
)

REVISION = "main"
TRANSFER_ATTEMPTS = 3
"""Tries per file when its transfer breaks midway (each resumes where huggingface_hub kept the partial file)."""
OLD_HUB = (0, 23)
"""huggingface_hub before 0.23 resumes only with ``resume_download=True`` and links big ``local_dir`` files into the
cache unless ``local_dir_use_symlinks=False``; later versions resume by themselves and deprecate both arguments."""
LRM_PRESET = "instant-mesh-large"


class FetchFailed(Exception):
    """Why the fetch stopped, in one line."""


@dataclass(frozen=True)
class Wanted:
    """One file to fetch: from which repo, and the folder it goes to with ``--dir`` (None: the cache)."""

    repo: str
    filename: str
    local_dir: Path | None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m instantmesh.fetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="put the files in DIR instead of the Hugging Face cache")
    parser.add_argument(
        "--lrm-config", type=Path, help=f"check the LRM against this config (default: the {LRM_PRESET} preset)"
    )
    args = parser.parse_args(argv)
    out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):  # the JSON line is the only thing on stdout
        try:
            result = fetch(args.dir.expanduser().resolve() if args.dir else None, args.lrm_config)
            code = 0
        except FetchFailed as exc:
            result, code = {"ok": False, "error": str(exc)}, 1
    out.write(json.dumps(result) + "\n")
    out.flush()
    return code


def fetch(directory: Path | None, lrm_config: Path | None) -> dict[str, Any]:
    """Downloads what is missing, checks every file, and says where each is and whether the search finds it."""
    hub = _hub()
    endpoint = hub.constants.ENDPOINT
    if hub.constants.HF_HUB_OFFLINE:
        raise FetchFailed(
            "offline: HF_HUB_OFFLINE is set, so nothing can be downloaded (unset it to fetch the weights)"
        )
    lrm_file = LRM_FILES["large"]
    folder = directory / ZERO123PLUS_FOLDER if directory else None
    listing = _repo_files(hub, ZERO123PLUS_REPO, endpoint)
    try:
        names = zero123plus_files(listing)
    except ValueError as exc:
        raise FetchFailed(f"{ZERO123PLUS_REPO} at {endpoint} is not the Zero123++ pipeline we load: {exc}") from None
    wanted = [Wanted(ZERO123PLUS_REPO, name, folder) for name in names]
    wanted += [Wanted(INSTANTMESH_REPO, name, directory) for name in (WHITEBG_UNET_FILE, lrm_file)]
    where = f"into {directory}" if directory else f"into the Hugging Face cache ({hf_cache_dir()})"
    print(f"fetching {len(wanted)} files from {endpoint} {where}", file=sys.stderr, flush=True)
    progress = Progress(len(wanted), sys.stderr.isatty())
    if not progress.bars:
        hub.utils.disable_progress_bars()
    paths = {(item.repo, item.filename): _download(hub, item, progress) for item in wanted}
    fetched = {
        "zero123plus": paths[(ZERO123PLUS_REPO, ZERO123PLUS_INDEX)].parent,
        "unet": paths[(INSTANTMESH_REPO, WHITEBG_UNET_FILE)],
        "lrm": paths[(INSTANTMESH_REPO, lrm_file)],
    }
    print("checking them with the loaders (keys and shapes; no weights are read) ...", file=sys.stderr, flush=True)
    checks = _check(fetched, lrm_config)
    files = [
        {"name": name, "path": str(path), "check": checks[name], **_found(name, path)} for name, path in fetched.items()
    ]
    return {
        "ok": True,
        "huggingface_hub": hub.__version__,
        "endpoint": endpoint,
        "directory": str(directory) if directory else None,
        "cache": None if directory else str(hf_cache_dir()),
        "files": files,
        "fetched_files": len(wanted),
        "downloaded_files": progress.downloaded,
        "downloaded_bytes": progress.downloaded_bytes,
    }


def _found(name: str, fetched: Path) -> dict[str, Any]:
    """What the worker's search (from this working directory, as the host starts it) finds for weight `name`: the
    path, the place it came from, and whether it is the fetched file (another may come first, e.g. ./ckpts/)."""
    search = next(s for s in search_weights(root=Path.cwd()) if s.name == name)
    place = next((p for p in search.places if p.found), None)
    return {
        "found": str(search.path) if search.path else None,
        "found_at": place.source if place else None,
        "found_is_fetched": search.path is not None and os.path.realpath(search.path) == os.path.realpath(fetched),
    }


class Progress:
    """A line per file on stderr: before it with bars (huggingface_hub's bar follows), after it without."""

    def __init__(self, total: int, bars: bool) -> None:
        self.total, self.bars = total, bars
        self.position = self.downloaded = self.downloaded_bytes = 0

    def start(self, item: Wanted) -> None:
        self.position += 1
        if self.bars:
            print(f"[{self.position}/{self.total}] {item.repo}: {item.filename}", file=sys.stderr, flush=True)

    def done(self, item: Wanted, path: Path, present: bool, seconds: float) -> None:
        size = path.stat().st_size
        if not present:
            self.downloaded += 1
            self.downloaded_bytes += size
        what = "already there" if present else f"downloaded in {seconds:.1f} s"
        prefix = "   " if self.bars else f"[{self.position}/{self.total}] {item.repo}: {item.filename}:"
        print(f"{prefix} {_size(size)}, {what}", file=sys.stderr, flush=True)


def _hub() -> ModuleType:
    try:
        import huggingface_hub
        import huggingface_hub.constants
        import huggingface_hub.utils
    except ImportError:
        raise FetchFailed(
            f"huggingface_hub is not installed in the worker environment ({sys.executable}): pip install huggingface_hub"
        ) from None
    return huggingface_hub


def _repo_files(hub: ModuleType, repo: str, endpoint: str) -> list[str]:
    """The repo's file list at REVISION; the first request, so an unreachable Hub fails here, at once."""
    try:
        info = hub.HfApi().model_info(repo, revision=REVISION)
    except hub.utils.HfHubHTTPError as exc:
        raise FetchFailed(f"cannot list {repo} at {endpoint}: {_one_line(exc)}") from None
    except Exception as exc:  # the HTTP library's own connection errors (requests' or httpx's, by version)
        raise FetchFailed(
            f"cannot reach the Hugging Face Hub at {endpoint}: {type(exc).__name__}: {_one_line(exc)}"
        ) from None
    return [sibling.rfilename for sibling in info.siblings or []]


def _download(hub: ModuleType, item: Wanted, progress: Progress) -> Path:
    """The file's path once it is whole; a transfer that breaks is tried again, TRANSFER_ATTEMPTS times in all."""
    progress.start(item)
    present = _present(hub, item)
    options = _download_options(hub, item)
    start = time.monotonic()
    for attempt in range(1, TRANSFER_ATTEMPTS + 1):
        try:
            path = Path(hub.hf_hub_download(item.repo, item.filename, revision=REVISION, **options))
        except (hub.utils.LocalEntryNotFoundError, hub.utils.HfHubHTTPError) as exc:
            raise FetchFailed(f"cannot download {item.repo}/{item.filename}: {_one_line(exc)}") from None
        except Exception as exc:  # a transfer that broke midway: huggingface_hub kept what it may resume from
            if attempt == TRANSFER_ATTEMPTS:
                raise FetchFailed(
                    f"the transfer of {item.repo}/{item.filename} broke {attempt} times "
                    f"({type(exc).__name__}: {_one_line(exc)}); run the command again"
                ) from None
            print(
                f"   the transfer broke ({type(exc).__name__}: {_one_line(exc)}); trying again",
                file=sys.stderr,
                flush=True,
            )
        else:
            progress.done(item, path, present, time.monotonic() - start)
            return path
    raise AssertionError("unreachable")


def _present(hub: ModuleType, item: Wanted) -> bool:
    if item.local_dir is not None:
        return (item.local_dir / item.filename).is_file()
    cached = hub.try_to_load_from_cache(item.repo, item.filename, cache_dir=str(hf_cache_dir()), revision=REVISION)
    return isinstance(cached, str)


def _download_options(hub: ModuleType, item: Wanted) -> dict[str, Any]:
    # The cache the search reads, named explicitly: huggingface_hub before 0.20 reads HUGGINGFACE_HUB_CACHE alone.
    options: dict[str, Any] = {"cache_dir": str(hf_cache_dir())}
    if item.local_dir is not None:
        options["local_dir"] = str(item.local_dir)
    parameters = inspect.signature(hub.hf_hub_download).parameters
    if _version(hub.__version__) < OLD_HUB:
        if "resume_download" in parameters:
            options["resume_download"] = True
        if item.local_dir is not None and "local_dir_use_symlinks" in parameters:
            options["local_dir_use_symlinks"] = False
    return options


def _check(fetched: dict[str, Path], lrm_config: Path | None) -> dict[str, str]:
    """Each file's check (``instantmesh.weights_check``), or FetchFailed naming the first that fails."""
    from .lrm.config import preset_path
    from .weights_check import check_lrm, check_whitebg_unet, check_zero123plus

    checks = {
        "zero123plus": lambda: check_zero123plus(fetched["zero123plus"]),
        "unet": lambda: check_whitebg_unet(fetched["unet"], fetched["zero123plus"]),
        "lrm": lambda: check_lrm(fetched["lrm"], lrm_config or preset_path(LRM_PRESET)),
    }
    verdicts = {}
    for name, check in checks.items():
        try:
            verdicts[name] = check()
        except (OSError, ValueError, RuntimeError) as exc:
            raise FetchFailed(f"{name} at {fetched[name]} fails the check: {_one_line(exc)}") from None
    return verdicts


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) if len(lines) <= 3 else "; ".join(lines[:3]) + " ..."


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:2])


def _size(size: int) -> str:
    if size < 1000:
        return f"{size} B"
    scaled, unit = next((size / 1000**n, unit) for n, unit in ((3, "GB"), (2, "MB"), (1, "kB")) if size >= 1000**n)
    return f"{scaled:.1f} {unit}"


if __name__ == "__main__":
    sys.exit(main())
