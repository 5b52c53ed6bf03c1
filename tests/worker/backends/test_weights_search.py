"""Where the official weights are looked for, in order: a given path, the environment variable, the
application's ``./instantmesh/ckpts/`` (Any6D) and ``./ckpts/`` (upstream), then the Hugging Face cache.

Stand-in files are enough here: the search checks that a file (or a folder with ``model_index.json``) is
there, and the loaders read them only later.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from instantmesh.weights import (
    CHECKPOINT_FOLDERS,
    ENV_LRM,
    ENV_UNET,
    ENV_ZERO123PLUS,
    INSTANTMESH_REPO,
    ZERO123PLUS_LOADED,
    ZERO123PLUS_REPO,
    WeightsNotFound,
    hf_cache_dir,
    resolve_weights,
    search_weights,
    zero123plus_files,
)
from rpcworker.backends.model_files import WeightsMissing, resolve_model_files
from rpcworker.options import WorkerOptions

UNET, LRM = "diffusion_pytorch_model.bin", "instant_mesh_large.ckpt"


def official_layout(folder: Path) -> Path:
    """The three official weights as stand-ins, laid out as in a checkpoint folder."""
    (folder / "zero123plus-v1.2").mkdir(parents=True)
    (folder / "zero123plus-v1.2" / "model_index.json").write_text("{}")
    (folder / UNET).write_bytes(b"unet")
    (folder / LRM).write_bytes(b"lrm")
    return folder


def cached_snapshots(cache: Path) -> None:
    """Both repos in a Hugging Face cache, as huggingface_hub (and ``fetch-weights``) leaves them."""
    for repo, files in ((ZERO123PLUS_REPO, ["model_index.json"]), (INSTANTMESH_REPO, [UNET, LRM])):
        snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / "0123abc"
        snapshot.mkdir(parents=True)
        for name in files:
            (snapshot / name).write_bytes(b"x")
        (cache / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
        (cache / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("0123abc")


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An application folder; the cache and the variables start empty."""
    for name in (ENV_ZERO123PLUS, ENV_UNET, ENV_LRM):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    (tmp_path / "app").mkdir()
    return tmp_path / "app"


def test_the_search_order_is_given_env_any6d_upstream_cache(app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = app.parent
    given, env = official_layout(tmp / "given"), official_layout(tmp / "env")
    for folder in CHECKPOINT_FOLDERS:
        official_layout(app / folder)
    cached_snapshots(tmp / "hf")

    def chosen(**given_paths: str) -> Path:
        paths = resolve_weights(root=app, **given_paths)
        assert paths.lrm.parent == paths.whitebg_unet.parent
        return paths.lrm.parent

    assert (
        chosen(zero123plus=str(given / "zero123plus-v1.2"), whitebg_unet=str(given / UNET), lrm=str(given / LRM))
        == given
    )
    monkeypatch.setenv(ENV_ZERO123PLUS, str(env / "zero123plus-v1.2"))
    monkeypatch.setenv(ENV_UNET, str(env / UNET))
    monkeypatch.setenv(ENV_LRM, str(env / LRM))
    assert chosen() == env
    for name in (ENV_ZERO123PLUS, ENV_UNET, ENV_LRM):
        monkeypatch.delenv(name)
    assert chosen() == app / "instantmesh" / "ckpts"
    assert resolve_weights(root=app).zero123plus == app / "instantmesh" / "ckpts" / "zero123plus-v1.2"
    shutil.rmtree(app / "instantmesh")
    assert chosen() == app / "ckpts"
    shutil.rmtree(app / "ckpts")
    paths = resolve_weights(root=app)
    assert paths.lrm.parent.parent.parent.name == f"models--{INSTANTMESH_REPO.replace('/', '--')}"
    assert paths.zero123plus.name == "0123abc"


def test_every_place_looked_at_is_listed_in_order_up_to_the_one_found(app: Path) -> None:
    official_layout(app / "ckpts")
    unet = search_weights(root=app)[1]
    assert [(p.source, p.path, p.found) for p in unet.places] == [
        (f"${ENV_UNET}", None, False),
        ("./instantmesh/ckpts", app / "instantmesh" / "ckpts" / UNET, False),
        ("./ckpts", app / "ckpts" / UNET, True),
    ]
    assert unet.path == app / "ckpts" / UNET


def test_a_given_path_is_the_only_place_for_that_file(app: Path) -> None:
    official_layout(app / "ckpts")
    (lrm,) = search_weights(lrm=str(app / "nowhere.ckpt"), root=app)[2].places
    assert (lrm.source, lrm.path, lrm.found) == ("given path", app / "nowhere.ckpt", False)


def test_missing_weights_are_one_line_naming_every_place_and_how_to_get_them(app: Path) -> None:
    (app / "ckpts").mkdir()
    (app / "ckpts" / UNET).write_bytes(b"unet")
    with pytest.raises(WeightsNotFound) as caught:
        resolve_weights(root=app)
    text = str(caught.value)
    assert "\n" not in text
    assert [s.name for s in caught.value.searches] == ["zero123plus", "lrm"], "the UNet was found"
    for place in (
        f"${ENV_ZERO123PLUS}: not set",
        f"./instantmesh/ckpts: {app / 'instantmesh' / 'ckpts' / 'zero123plus-v1.2'}",
        f"./ckpts: {app / 'ckpts' / 'zero123plus-v1.2'}",
        f"Hugging Face cache ({ZERO123PLUS_REPO}): {app.parent / 'hf'}",
        f"./instantmesh/ckpts: {app / 'instantmesh' / 'ckpts' / LRM}",
        f"./ckpts: {app / 'ckpts' / LRM}",
        f"Hugging Face cache ({INSTANTMESH_REPO}): {app.parent / 'hf'}",
    ):
        assert place in text
    assert text.count("instantmesh-rpc fetch-weights") == 1  # the one command, once for the three files


def test_the_worker_refuses_to_start_without_the_official_weights(app: Path) -> None:
    """``--preset official`` is the worker's default; ``auto`` with a named path is an error too."""
    with pytest.raises(WeightsMissing, match=r"official weights not found: .*\./ckpts: " + str(app / "ckpts")):
        resolve_model_files(WorkerOptions(weights_root=str(app)))
    with pytest.raises(WeightsMissing, match="given path"):
        resolve_model_files(WorkerOptions(preset="auto", lrm=str(app / "missing.ckpt"), weights_root=str(app)))
    assert WorkerOptions().preset == "official"


def test_the_worker_refuses_to_start_with_a_component_saved_only_as_a_pickle(app: Path) -> None:
    """The Zero123++ folder found must hold safetensors for each component it loads: one with pickles only (or
    none) ends the start with WeightsMissing, whatever the preset, in one line naming the component and the
    command that fetches safetensors; with safetensors stand-ins the same folder is taken."""
    folder = official_layout(app / "ckpts") / "zero123plus-v1.2"
    for name in ZERO123PLUS_LOADED:
        (folder / name).mkdir()
        (folder / name / "model.safetensors").write_bytes(b"x")
    assert resolve_model_files(WorkerOptions(weights_root=str(app))).zero123plus == folder
    (folder / "vae" / "model.safetensors").unlink()
    (folder / "vae" / "diffusion_pytorch_model.bin").write_bytes(b"x")
    for preset in ("official", "auto"):
        with pytest.raises(WeightsMissing) as caught:
            resolve_model_files(WorkerOptions(preset=preset, weights_root=str(app)))
        text = str(caught.value)
        assert "\n" not in text
        assert f"{folder / 'vae'} has its weights only as pickles (diffusion_pytorch_model.bin)" in text
        assert "`instantmesh-rpc fetch-weights`" in text
    shutil.rmtree(folder / "vae")
    with pytest.raises(WeightsMissing, match=re.escape(f"{folder / 'vae'} is missing")):
        resolve_model_files(WorkerOptions(weights_root=str(app)))


def test_the_files_fetched_of_the_zero123plus_repo_are_those_the_loader_reads() -> None:
    """One set of safetensors weights per loaded component (no pickles: they are never loaded; full precision over
    fp16 where both are), only the config of the UNet (the white-background UNet replaces its weights), the small
    folders whole, ``model_index.json`` last; READMEs and nested folders are left."""
    listing = [
        ".gitattributes",
        "README.md",
        "model_index.json",
        "pipeline.py",
        "scheduler/scheduler_config.json",
        "feature_extractor_clip/preprocessor_config.json",
        "feature_extractor_vae/preprocessor_config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.bin",
        "vae/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors",
        "text_encoder/pytorch_model.bin",
        "vision_encoder/config.json",
        "vision_encoder/pytorch_model.bin.index.json",
        "vision_encoder/pytorch_model-00001-of-00002.bin",
        "vision_encoder/pytorch_model-00002-of-00002.bin",
        "vision_encoder/model.safetensors.index.json",
        "vision_encoder/model-00001-of-00002.safetensors",
        "vision_encoder/model-00002-of-00002.safetensors",
        "vision_encoder/onnx/model.onnx",
    ]
    assert zero123plus_files(listing) == [
        "tokenizer/merges.txt",
        "tokenizer/vocab.json",
        "scheduler/scheduler_config.json",
        "feature_extractor_clip/preprocessor_config.json",
        "feature_extractor_vae/preprocessor_config.json",
        "unet/config.json",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/config.json",
        "text_encoder/model.fp16.safetensors",
        "vision_encoder/config.json",
        "vision_encoder/model-00001-of-00002.safetensors",
        "vision_encoder/model-00002-of-00002.safetensors",
        "vision_encoder/model.safetensors.index.json",
        "model_index.json",
    ]
    with pytest.raises(ValueError, match="vision_encoder/ has no safetensors weights .*pickled weights are never"):
        zero123plus_files([n for n in listing if not n.startswith("vision_encoder/model")])
    with pytest.raises(ValueError, match="model_index.json is missing"):
        zero123plus_files(listing[3:])


def test_the_cache_is_where_huggingface_hub_puts_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path / "old"))  # huggingface_hub 0.17 reads this one alone
    assert hf_cache_dir() == tmp_path / "old"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "new"))
    assert hf_cache_dir() == tmp_path / "new"
