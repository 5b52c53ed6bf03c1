"""The API prepares photos as the CLI does: one photo with one set of options reaches the model as the same
pixels, from the same PNG, and gives the same views and mesh, through ``InstantMeshWorker`` and through
``python -m host batch``. ``prepare=False`` sends an input prepared elsewhere (Any6D's) untouched, and a host
without pillow is refused when the worker is made, in one line.

What reached the model is read from the mock worker: ``--mock report_inputs`` writes a digest of each decoded
views input to its stderr, which the API hands to ``on_stderr`` and the CLI echoes with ``--verbose``.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from host import InstantMeshWorker, PrepareOptions
from host.api.preparing import prepare_image
from host.images.preparation import prepare
from rpcworker.backends.mock import model_input_digest
from tests.conftest import HOST_PYTHON, ROOT
from tests.host.images.rembg_stand_in import offline_rembg, write_photo_needing_rembg, write_stand_in_model

pytestmark = pytest.mark.pipe

EXAMPLES = ROOT / "examples" / "inputs"
REPORTING_MOCK = "step_delay=0,report_inputs"
DIGEST = re.compile(r"mock model input: ([0-9a-f]{64})")
STEPS = 3

PHOTO_NEEDING_REMBG = "green_backdrop.png"
"""Made by the test (tests/host/images/rembg_stand_in.py), not one of the examples."""
CASES = {
    "upstream-defaults": ("mug.png", (), PrepareOptions(), "alpha"),
    "any6d-options-and-a-mask-file": (
        "box.png",
        ("--foreground-ratio", "0.8", "--flip", "--white-background"),
        PrepareOptions(foreground_ratio=0.8, flip=True, white_background=True),
        "mask file",
    ),
    "a-photo-that-needs-rembg": (PHOTO_NEEDING_REMBG, ("--flip",), PrepareOptions(flip=True), "rembg"),
}
"""A photo outlined by its alpha channel, one outlined by its NAME_mask.png and one by rembg (with a stand-in
model, offline), each with the CLI's flags and the API's options for the same preparation."""


class ReportedInputs:
    """The mock worker's stderr, gathered for an ``on_stderr``; waits for a digest line, not for time."""

    def __init__(self) -> None:
        self.digests: list[str] = []
        self._heard = threading.Condition()

    def __call__(self, line: str) -> None:
        found = DIGEST.search(line)
        if found:
            with self._heard:
                self.digests.append(found.group(1))
                self._heard.notify_all()

    def wait_for(self, count: int) -> list[str]:
        with self._heard:
            assert self._heard.wait_for(lambda: len(self.digests) >= count, timeout=30), self.digests
            return list(self.digests)


def reporting_worker(worker_python: Path, heard: ReportedInputs, **options: object) -> InstantMeshWorker:
    return InstantMeshWorker(
        str(worker_python), backend="mock", worker_args=["--mock", REPORTING_MOCK], on_stderr=heard, **options
    )


def run_cli_batch(worker_python: Path, photo: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    if not HOST_PYTHON.exists():
        pytest.fail(f"{HOST_PYTHON} missing: run scripts/setup.sh")
    command = [str(HOST_PYTHON), "-m", "host", "batch", str(photo), "--out", str(out), "--steps", str(STEPS)]
    command += ["--python", str(worker_python), "--mock", REPORTING_MOCK, "--verbose", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.cli
@pytest.mark.parametrize("case", sorted(CASES))
def test_one_photo_gives_the_model_the_same_input_and_the_same_mesh_through_the_api_and_the_cli(
    case: str, worker_python: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, flags, options, outline = CASES[case]
    folder = tmp_path / "in"
    folder.mkdir()
    for file in EXAMPLES.glob(f"{Path(name).stem}*.png"):  # the photo and its mask file, if any
        shutil.copy(file, folder / file.name)
    if name == PHOTO_NEEDING_REMBG:  # rembg reads the stand-in in this process and in the CLI's (inherited)
        write_photo_needing_rembg(folder / name)
        write_stand_in_model(tmp_path / "u2net")
        offline_rembg(monkeypatch, tmp_path / "u2net")
    photo, stem = folder / name, Path(name).stem
    assert prepare_image(photo, options).outline == outline

    cli_out = tmp_path / "cli"
    done = run_cli_batch(worker_python, photo, cli_out, *flags)
    assert done.returncode == 0, done.stdout + done.stderr
    cli_digests = DIGEST.findall(done.stderr)
    staged = (cli_out / f"{stem}_input.png").read_bytes()

    heard = ReportedInputs()
    api_out = tmp_path / "api"
    with reporting_worker(worker_python, heard) as worker:
        mesh = worker.image_to_mesh(
            photo,
            api_out / f"{stem}.obj",
            save_grid=api_out / f"{stem}_views.png",
            num_inference_steps=STEPS,
            prepare_options=options,
        )
        api_digests = heard.wait_for(1)

    assert staged == prepare_image(photo, options).png, "the CLI stages the very PNG the API sends"
    assert len(cli_digests) == 1 and cli_digests == api_digests
    assert api_digests[0] == model_input_digest(Image.open(io.BytesIO(staged)))
    unprepared = Image.open(photo)
    assert api_digests[0] != model_input_digest(
        unprepared.convert("RGBA" if unprepared.mode == "P" else unprepared.mode)
    )
    assert Path(mesh.path).read_bytes() == (cli_out / f"{stem}.obj").read_bytes()
    assert (api_out / f"{stem}_views.png").read_bytes() == (cli_out / f"{stem}_views.png").read_bytes()


@pytest.mark.parametrize("where", ["per-call", "on-the-worker"])
def test_prepare_false_sends_an_input_prepared_elsewhere_bit_for_bit(
    where: str, worker_python: Path, tmp_path: Path
) -> None:
    """Any6D passes the RGBA its own preprocessing returns; prepared again, it would be another input."""
    crop = np.asarray(prepare(EXAMPLES / "box.png", EXAMPLES / "box_mask.png", ratio=0.8, flip=True).image)
    assert crop.shape == (320, 320, 4)
    heard = ReportedInputs()
    with reporting_worker(worker_python, heard, prepare=where == "per-call") as worker:
        worker.generate_views(crop, num_inference_steps=1, **({"prepare": False} if where == "per-call" else {}))
        worker.generate_views(crop, num_inference_steps=1, prepare=True)
        as_is, prepared_again = heard.wait_for(2)
    assert as_is == model_input_digest(Image.fromarray(crop)) != prepared_again


def test_a_photo_that_cannot_be_prepared_is_one_line_before_any_request(worker_python: Path, tmp_path: Path) -> None:
    from host import InputNotFound, InputUnreadable

    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(noise)
    worker = InstantMeshWorker(str(tmp_path / "no-such-python"))  # reaching the worker would fail to start it
    with pytest.raises(InputUnreadable) as unreadable:
        worker.generate_views(noise, prepare_options=PrepareOptions(background_removal="white"))
    assert "noise.png: no alpha channel, no mask and no white background" in unreadable.value.message
    with pytest.raises(InputNotFound, match="missing.png"):
        worker.image_to_mesh(tmp_path / "missing.png", tmp_path / "m.obj")
    assert "\n" not in str(unreadable.value) and worker.client.process is None


def test_without_pillow_a_worker_that_prepares_is_refused_when_made(worker_python: Path, object_png: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["PIL"] = None  # as where the images extra is not installed
        from host import InstantMeshWorker, PreparationUnavailable, WorkerPool
        makers = (
            lambda: InstantMeshWorker(sys.argv[1], backend="mock"),
            lambda: WorkerPool(sys.argv[1], workers=1, backend="mock"),  # one CPU worker: no GPU needed
        )
        for make in makers:
            try:
                make()
            except PreparationUnavailable as exc:
                print("refused:", exc)
        with InstantMeshWorker(sys.argv[1], backend="mock", prepare=False) as worker:
            print("as it is:", worker.generate_views(sys.argv[2], num_inference_steps=1).view_size)
            try:
                worker.generate_views(sys.argv[2], prepare=True)
            except PreparationUnavailable as exc:
                print("refused:", exc)
        """
    )
    done = subprocess.run(
        [str(HOST_PYTHON), "-c", script, str(worker_python), str(object_png)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["refused", "refused", "as it is", "refused"], done.stdout
    assert lines[2] == "as it is: 320"
    for refusal in (lines[0], lines[1], lines[3]):
        assert "needs pillow in this Python" in refusal, refusal
        assert 'pip install "instantmesh-rpc[images]" into it, or pass prepare=False' in refusal


def test_without_rembg_a_photo_that_needs_it_is_one_line_naming_the_install_command(tmp_path: Path) -> None:
    """Before any request, as other inputs that cannot be prepared; the command installs into the host's Python."""
    photo = write_photo_needing_rembg(tmp_path / "photo.png")
    script = textwrap.dedent(
        """
        import sys
        sys.modules["rembg"] = None  # as where the rembg extra is not installed
        from host import InputUnreadable, InstantMeshWorker
        worker = InstantMeshWorker(sys.argv[1])  # reaching the worker would fail to start it
        try:
            worker.generate_views(sys.argv[2])
        except InputUnreadable as exc:
            print(exc.data["reason"], "|", exc.message, "|", worker.client.process)
        """
    )
    done = subprocess.run(
        [str(HOST_PYTHON), "-c", script, str(tmp_path / "no-such-python"), str(photo)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    reason, message, process = done.stdout.rstrip("\n").split(" | ")
    assert (reason, process) == ("needs rembg", "None"), done.stdout
    assert message.startswith(f"{photo}: no alpha channel, no mask and no white background"), message
    assert message.endswith(
        f'install it with: {HOST_PYTHON} -m pip install "rembg>=2.0.50" "onnxruntime>=1.16" '
        "(or give NAME_mask.png beside the photo, or an RGBA image)"
    ), message
