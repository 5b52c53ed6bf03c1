"""``fetch-weights`` against a stand-in Hub on 127.0.0.1 (tests/hub_stand_in.py) serving the tiny preset's files in
the official layouts: what it downloads and where, that the worker's search then finds them, that a dropped
connection is resumed with a Range request, that the loaders' check catches a wrong file, and its one-line failures
(offline, the Hub out of reach, a file the Hub fails to serve) that leave nothing the search would take as whole."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HOST_PYTHON, MODELS_PYTHON, ROOT
from tests.hub_stand_in import Repo, StandInHub, closed_port, stand_in_hub

pytestmark = [pytest.mark.cli, pytest.mark.models, pytest.mark.upstream]

ZERO123PLUS, INSTANTMESH = "sudo-ai/zero123plus-v1.2", "TencentARC/InstantMesh"
UNET, LRM = "diffusion_pytorch_model.bin", "instant_mesh_large.ckpt"
TINY_LRM_CONFIG = ROOT / "instantmesh" / "configs" / "tiny.yaml"
HUB_CHUNK = 10 * 1024 * 1024
"""huggingface_hub writes what it receives in chunks of 10 MiB (0.17 and 2.x): a cut after more than one chunk
leaves a partial file to resume from."""
LRM_PADDING = 12 * 1024 * 1024
"""Bytes of a training-only tensor (``lpips.*``, as the official checkpoint carries) that make the LRM file span two
chunks, so that a connection cut within the second one is resumed from the first one's end."""


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Repo]:
    """The two repos as the Hub holds them, with the tiny preset's files in the official layouts, and extras
    that fetch-weights must leave alone (the pipeline's own UNet weights, the base LRM, READMEs)."""
    import torch

    from instantmesh.tiny import ensure_tiny_weights

    tiny = ensure_tiny_weights(tmp_path_factory.mktemp("tiny"))
    folder = tiny.paths.zero123plus
    pipeline = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    pipeline.update({"README.md": b"# Zero123++ v1.2 (stand-in)\n", ".gitattributes": b"*.safetensors filter=lfs\n"})
    checkpoint = torch.load(tiny.paths.lrm, map_location="cpu", weights_only=True)
    checkpoint["state_dict"]["lpips.pad"] = torch.zeros(LRM_PADDING // 4)
    lrm = tmp_path_factory.mktemp("lrm") / LRM
    torch.save(checkpoint, lrm)
    instantmesh = {
        UNET: tiny.paths.whitebg_unet.read_bytes(),
        LRM: lrm.read_bytes(),
        "instant_mesh_base.ckpt": b"not fetched",
        "README.md": b"# InstantMesh (stand-in)\n",
    }
    return {ZERO123PLUS: Repo(pipeline), INSTANTMESH: Repo(instantmesh)}


@pytest.fixture()
def hub(repos: dict[str, Repo]) -> Iterator[StandInHub]:
    with stand_in_hub(repos) as running:
        yield running


def _fetch(*args: str, cwd: Path, endpoint: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("INSTANTMESH_", "HF_"))}
    if "INSTANTMESH_RPC_CACHE" in os.environ:
        clean["INSTANTMESH_RPC_CACHE"] = os.environ["INSTANTMESH_RPC_CACHE"]
    clean.update(PYTHONPATH=str(ROOT), HF_HUB_CACHE=str(cwd / "hf"), HF_ENDPOINT=endpoint, **env)
    argv = [str(HOST_PYTHON), "-m", "host", "fetch-weights", "--python", str(MODELS_PYTHON), *args]
    return subprocess.run(argv, cwd=cwd, env=clean, capture_output=True, text=True, timeout=300)


def _search(root: Path, cache: Path) -> dict[str, str | None]:
    """What the worker's search finds from the folder `root` with the Hugging Face cache `cache` (and no
    INSTANTMESH_* variables), each file's path or None."""
    from instantmesh.weights import search_weights

    with pytest.MonkeyPatch.context() as patch:
        for name in ("INSTANTMESH_ZERO123PLUS", "INSTANTMESH_UNET", "INSTANTMESH_LRM", "HUGGINGFACE_HUB_CACHE"):
            patch.delenv(name, raising=False)
        patch.setenv("HF_HUB_CACHE", str(cache))
        return {s.name: str(s.path) if s.path else None for s in search_weights(root=root)}


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_fetch_into_the_cache_resumes_a_dropped_connection_and_the_search_finds_the_files(
    tmp_path: Path, hub: StandInHub, repos: dict[str, Repo]
) -> None:
    cut = HUB_CHUNK + 512 * 1024
    hub.drop_once[f"{INSTANTMESH}/{LRM}"] = cut
    out = _fetch("--lrm-config", str(TINY_LRM_CONFIG), cwd=tmp_path, endpoint=hub.endpoint)
    assert out.returncode == 0, out.stdout + out.stderr

    lrm_gets = [
        r.range
        for r in hub.requests("cdn")
        if r.path == f"/lfs/{hashlib.sha256(repos[INSTANTMESH].files[LRM]).hexdigest()}"
    ]
    assert lrm_gets[0] is None and lrm_gets[1] == f"bytes={HUB_CHUNK}-", lrm_gets  # resumed after the whole chunk
    found = _search(tmp_path, tmp_path / "hf")
    assert found["lrm"] and _sha(found["lrm"]) == hashlib.sha256(repos[INSTANTMESH].files[LRM]).hexdigest()
    assert found["unet"] and Path(found["unet"]).read_bytes() == repos[INSTANTMESH].files[UNET]
    folder = Path(found["zero123plus"] or "")
    assert folder.parent.parent == tmp_path / "hf" / "models--sudo-ai--zero123plus-v1.2"
    fetched = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    served = repos[ZERO123PLUS].files
    pipeline_weights = "unet/diffusion_pytorch_model.safetensors"  # replaced whole by the white-background UNet
    assert fetched == sorted(n for n in served if ("/" in n and n != pipeline_weights) or n == "model_index.json")
    assert "unet/config.json" in fetched and pipeline_weights not in fetched
    assert "README.md" not in fetched and all((folder / name).read_bytes() == served[name] for name in fetched)
    never = {"/sudo-ai/zero123plus-v1.2/resolve/main/README.md", f"/{INSTANTMESH}/resolve/main/instant_mesh_base.ckpt"}
    assert not never & {r.path for r in hub.log}

    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"fetched {len(fetched) + 2} files into the Hugging Face cache ({tmp_path / 'hf'})")
    assert "lrm" in out.stdout and "tensors under 'lrm_generator.'" in out.stdout
    assert lines[-1] == "the worker finds them with no option (it searches the Hugging Face cache)"

    downloads = len(hub.requests("cdn"))
    again = _fetch("--lrm-config", str(TINY_LRM_CONFIG), cwd=tmp_path, endpoint=hub.endpoint)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 downloaded" in again.stdout and again.stderr.count("already there") == len(fetched) + 2
    assert len(hub.requests("cdn")) == downloads


def test_fetch_into_a_folder_uses_the_checkpoint_layout_and_prints_what_to_pass(
    tmp_path: Path, hub: StandInHub
) -> None:
    out = _fetch("--dir", "app/ckpts", "--lrm-config", str(TINY_LRM_CONFIG), cwd=tmp_path, endpoint=hub.endpoint)
    assert out.returncode == 0, out.stdout + out.stderr
    target = tmp_path / "app" / "ckpts"
    # Nothing of the weights in the cache (huggingface_hub < 0.23 leaves empty folders and refs there).
    assert not [p for p in (tmp_path / "hf").rglob("*") if p.is_file() and p.parent.name != "refs"]
    # From tmp_path the worker would not search app/ckpts: the command says what to pass.
    assert f"--zero123plus {target / 'zero123plus-v1.2'} --unet {target / UNET} --lrm {target / LRM}" in out.stdout
    assert f"zero123plus={str(target / 'zero123plus-v1.2')!r}" in out.stdout
    assert f"INSTANTMESH_LRM={target / LRM}" in out.stdout
    # A worker started from app/ finds them with no option: ./ckpts is one of the folders it searches.
    assert _search(tmp_path / "app", tmp_path / "hf") == {
        "zero123plus": str(target / "zero123plus-v1.2"),
        "unet": str(target / UNET),
        "lrm": str(target / LRM),
    }


def test_a_checkpoint_that_is_not_the_loaders_model_fails_the_check_in_one_line(
    tmp_path: Path, hub: StandInHub
) -> None:
    out = _fetch(cwd=tmp_path, endpoint=hub.endpoint)  # the tiny LRM against instant-mesh-large's keys and shapes
    assert out.returncode == 1, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: fetch-weights: lrm at {tmp_path / 'hf'}")
    assert "fails the check" in errors[0] and "weights do not match the model" in errors[0]
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable"])
def test_offline_fails_in_one_line_and_writes_nothing(tmp_path: Path, how: str) -> None:
    if how == "HF_HUB_OFFLINE":
        out = _fetch(cwd=tmp_path, endpoint="http://127.0.0.1:9", HF_HUB_OFFLINE="1")
        expected = "error: fetch-weights: offline: HF_HUB_OFFLINE is set"
    else:
        endpoint = f"http://127.0.0.1:{closed_port()}"
        out = _fetch(cwd=tmp_path, endpoint=endpoint)
        expected = f"error: fetch-weights: cannot reach the Hugging Face Hub at {endpoint}: "
    assert out.returncode == 1 and out.stdout == ""
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith(expected), out.stderr
    assert not (tmp_path / "hf").exists()


def test_a_file_the_hub_fails_to_serve_leaves_no_folder_the_search_takes(tmp_path: Path, hub: StandInHub) -> None:
    hub.missing.add(f"{ZERO123PLUS}/vision_encoder/config.json")
    out = _fetch("--lrm-config", str(TINY_LRM_CONFIG), cwd=tmp_path, endpoint=hub.endpoint)
    assert out.returncode == 1, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == out.stderr.splitlines()[-1:]  # one line, the last: after the files that did arrive
    assert errors[0].startswith(f"error: fetch-weights: cannot download {ZERO123PLUS}/vision_encoder/config.json: ")
    assert not list((tmp_path / "hf").rglob("model_index.json"))  # fetched last: the folder is not a pipeline yet
    assert _search(tmp_path, tmp_path / "hf")["zero123plus"] is None


def test_help_names_the_options_and_where_the_files_go() -> None:
    out = subprocess.run(
        [str(HOST_PYTHON), "-m", "host", "fetch-weights", "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0
    for text in ("--dir DIR", "--python ENV", "--lrm-config YAML", "Hugging Face cache", "HF_HUB_OFFLINE"):
        assert text in " ".join(out.stdout.split()), text
