"""The CLI's options become the API's ViewOptions, MeshOptions and PrepareOptions (one type from argv to the
wire), and a guidance scale or a foreground ratio out of its declared range is one usage line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from host.api.options import MeshOptions, PrepareOptions, ViewOptions
from host.cli.arguments import settings_from_args
from host.cli.main import build_parser
from rpcworker.wire.messages import PROTOCOL_VERSION
from tests.conftest import ROOT


@pytest.mark.parametrize("command", ["batch", "session"])
def test_object_options_become_the_apis_options(command: str, tmp_path: Path) -> None:
    inputs = ["image.png"] if command == "batch" else []
    argv = [
        command,
        *inputs,
        "--out",
        str(tmp_path),
        "--seed",
        "3",
        "--steps",
        "9",
        "--guidance-scale",
        "0",
        "--format",
        "glb",
        "--texture-map",
        "--foreground-ratio",
        "0.8",
        "--flip",
        "--white-background",
        "--background-removal",
        "rembg",
    ]
    settings = settings_from_args(build_parser().parse_args(argv))
    assert settings.views == ViewOptions(seed=3, num_inference_steps=9, guidance_scale=0.0)
    assert settings.mesh == MeshOptions(format="glb", texture_map=True)
    assert settings.format == "glb"
    assert settings.preparation == PrepareOptions(
        foreground_ratio=0.8, flip=True, white_background=True, background_removal="rembg"
    )
    defaults = settings_from_args(build_parser().parse_args([command, *inputs, "--out", str(tmp_path)]))
    assert defaults.preparation == PrepareOptions()


def test_a_guidance_out_of_range_is_one_usage_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["batch", "image.png", "--out", str(tmp_path), "--guidance-scale", "101"])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--guidance-scale" in error and "<= 100.0" in error


def test_version_names_the_release_and_the_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--version"])
    assert exited.value.code == 0
    release = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert release is not None
    assert capsys.readouterr().out.strip() == f"instantmesh-rpc {release.group(1)}, protocol {PROTOCOL_VERSION}"


@pytest.mark.parametrize("ratio", ["0", "1.5", "big"])
def test_a_foreground_ratio_out_of_its_range_is_one_usage_line(
    ratio: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["batch", "image.png", "--out", str(tmp_path), "--foreground-ratio", ratio])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--foreground-ratio" in error and ("> 0.0" in error or "<= 1.0" in error or "a number" in error), error
