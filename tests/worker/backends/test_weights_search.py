"""Where the official weights are looked for, in order: a given path, the environment variable, the
application's ``./instantmesh/ckpts/`` (Any6D) and ``./ckpts/`` (upstream), then the Hugging Face cache.

Stand-in files are enough here: the search checks that a file (or a folder with ``model_index.json``) is
there, and the loaders read them only later.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from instantmesh.weights import (
    CHECKPOINT_FOLDERS,
    ENV_LRM,
    ENV_UNET,
    ENV_ZERO123PLUS,
    INSTANTMESH_REPO,
    ZERO123PLUS_REPO,
    WeightsNotFound,
    resolve_weights,
    search_weights,
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
    """Both repos in a Hugging Face cache, as ``huggingface-cli download`` leaves them."""
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
    assert f"huggingface-cli download {ZERO123PLUS_REPO}" in text
    assert f"huggingface-cli download {INSTANTMESH_REPO} {UNET} {LRM}" in text


def test_the_worker_refuses_to_start_without_the_official_weights(app: Path) -> None:
    """``--preset official`` is the worker's default; ``auto`` with a named path is an error too."""
    with pytest.raises(WeightsMissing, match=r"official weights not found: .*\./ckpts: " + str(app / "ckpts")):
        resolve_model_files(WorkerOptions(weights_root=str(app)))
    with pytest.raises(WeightsMissing, match="given path"):
        resolve_model_files(WorkerOptions(preset="auto", lrm=str(app / "missing.ckpt"), weights_root=str(app)))
    assert WorkerOptions().preset == "official"
