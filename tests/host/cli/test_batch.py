"""``python -m host batch`` as a person runs it: the host env, a mock worker, a corrupt image among good ones."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import HOST_PYTHON, ROOT

pytestmark = pytest.mark.cli

EXAMPLES = ROOT / "examples" / "inputs"


def worker_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def run_batch(worker_python: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    if not HOST_PYTHON.exists():
        pytest.fail(f"{HOST_PYTHON} missing: run scripts/setup.sh")
    command = [
        str(HOST_PYTHON),
        "-m",
        "host",
        "batch",
        *map(str, args),
        "--python",
        str(worker_python),
        "--mock",
        "step_delay=0",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)
    for pid in re.findall(r"worker ready in .* pid (\d+)", done.stdout):
        assert worker_gone(int(pid)), f"worker {pid} outlived the batch"
    return done


def row(stdout: str, name: str) -> list[str]:
    for line in stdout.splitlines():
        cells = line.split()
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no summary row for {name}:\n{stdout}")


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("mug.png", "box.png", "box_mask.png", "ball.png"):
        shutil.copy(EXAMPLES / name, folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    return folder


@pytest.mark.parametrize("batching", [(), ("--max-batch", "3")], ids=["one-at-a-time", "in-flight-batches"])
def test_a_corrupt_image_fails_alone_and_resume_skips_the_done(
    worker_python: Path, inputs: Path, tmp_path: Path, batching: tuple[str, ...]
) -> None:
    out = tmp_path / "out"
    first = run_batch(worker_python, inputs, "--out", out, "--steps", "3", "--contact-sheet", *batching)
    assert ("in flight through it" in first.stdout) == bool(batching)
    assert first.returncode == 1, first.stdout + first.stderr
    assert row(first.stdout, "broken")[1] == "failed"
    assert re.search(r"failed objects:\n  broken \(.*broken.png\): .*broken.png: not a readable image", first.stderr), (
        first.stderr
    )
    for name in ("ball", "box", "mug"):
        assert row(first.stdout, name)[1] == "ok"
        assert (out / f"{name}.obj").stat().st_size > 0
        assert (out / f"{name}_views.png").exists() and (out / f"{name}_sheet.png").exists()
    assert "3 ok, 1 failed" in first.stdout
    assert not (out / "broken.obj").exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no staged input left behind
    assert sorted(p.name for p in out.glob("*_input.png")) == ["ball_input.png", "box_input.png", "mug_input.png"]

    stamps = {name: (out / f"{name}.obj").stat().st_mtime_ns for name in ("ball", "box", "mug")}
    again = run_batch(worker_python, inputs, "--out", out, "--steps", "3")
    assert again.returncode == 1
    assert "3 already done (skipped" in again.stdout
    assert [row(again.stdout, n)[1] for n in ("ball", "box", "mug", "broken")] == [
        "skipped",
        "skipped",
        "skipped",
        "failed",
    ]
    assert {name: (out / f"{name}.obj").stat().st_mtime_ns for name in stamps} == stamps

    (inputs / "broken.png").unlink()
    redo = run_batch(worker_python, inputs / "mug.png", "--out", out, "--steps", "2", "--overwrite", "--format", "obj")
    assert redo.returncode == 0, redo.stderr
    assert row(redo.stdout, "mug")[1] == "ok" and (out / "mug.obj").stat().st_mtime_ns != stamps["mug"]


def test_without_preprocessing_the_worker_reports_the_corrupt_image(
    worker_python: Path, inputs: Path, tmp_path: Path
) -> None:
    done = run_batch(
        worker_python,
        inputs / "broken.png",
        inputs / "ball.png",
        "--out",
        tmp_path / "o",
        "--no-preprocess",
        "--format",
        "ply",
        "--steps",
        "2",
    )
    assert done.returncode == 1
    assert row(done.stdout, "ball")[1] == "ok" and (tmp_path / "o" / "ball.ply").exists()
    assert "input_unreadable" in done.stderr and "broken.png" in done.stderr
    assert not (tmp_path / "o" / "ball_input.png").exists()


def test_missing_inputs_and_an_unstartable_worker_are_clear(tmp_path: Path, worker_python: Path) -> None:
    nothing = run_batch(worker_python, tmp_path, "--out", tmp_path / "o")
    assert (
        nothing.returncode == 2
        and "no .png/.jpg images" in nothing.stderr
        and "no input images found" in nothing.stderr
    )
    shutil.copy(EXAMPLES / "ball.png", tmp_path / "ball.png")
    broken = run_batch(tmp_path / "no-such-python", tmp_path / "ball.png", "--out", tmp_path / "o")
    assert broken.returncode == 2
    assert broken.stderr.count("\n") == 1, broken.stderr  # one line: no table, no list of failed objects after it
    assert "no-such-python (from the python argument) does not exist" in broken.stderr
    assert "object  status" not in broken.stdout


def test_inputs_that_are_not_images_are_found_before_the_worker_starts(tmp_path: Path) -> None:
    """A text file named .png and a FIFO fail at once, each in its own line; no worker is needed to say so."""
    (tmp_path / "notes.png").write_text("not an image\n")
    os.mkfifo(tmp_path / "pipe.png")
    done = run_batch(
        tmp_path / "no-such-python", tmp_path / "notes.png", tmp_path / "pipe.png", "--out", tmp_path / "o"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "starting the worker" not in done.stdout
    assert "notes.png: not an image (its first bytes are none of PNG, JPEG" in done.stderr
    assert "pipe.png: not a regular file" in done.stderr


def test_the_cli_modules_import_without_pillow_numpy_or_trimesh() -> None:
    code = (
        "import sys\n"
        "import host.cli.main, host.cli.session, host.cli.objects, host.api.progress\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'numpy', 'PIL', 'trimesh', 'torch'})\n"
        "assert not heavy, heavy\n"
        "host.cli.main.build_parser().parse_args(['batch', 'x', '--out', 'y'])\n"
    )
    done = subprocess.run([str(HOST_PYTHON), "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_ctrl_c_cancels_the_batch_and_reports_what_did_not_run(
    worker_python: Path, inputs: Path, tmp_path: Path
) -> None:
    from tests.host.cli.terminal import TerminalProgram

    argv = [
        str(HOST_PYTHON),
        "-m",
        "host",
        "batch",
        str(inputs),
        "--out",
        str(tmp_path / "o"),
        "--steps",
        "400",
        "--python",
        str(worker_python),
        "--mock",
        "step_delay=0.05",
    ]
    program = TerminalProgram(argv, env=dict(os.environ, TERM="dumb"), cwd=str(ROOT))
    try:
        pid = int(program.expect(r"pid (\d+)", 30).group(1))
        program.expect(r"views +\[#*\.+\] \d+/400", 30)
        program.send("\x03")
        assert program.wait(20) == 130
    finally:
        program.close()
    assert "interrupted: the request in flight was cancelled" in program.output
    assert re.search(r"ball +cancelled", program.output) and re.search(r"mug +not run", program.output)
    assert worker_gone(pid)


@pytest.mark.parametrize("batching", [[], ["--max-batch", "2"]], ids=["one-at-a-time", "in-flight-batches"])
def test_ctrl_c_during_the_mesh_leaves_no_views_grid_of_the_unfinished_object(
    worker_python: Path, tmp_path: Path, batching: list[str]
) -> None:
    from tests.host.cli.terminal import TerminalProgram

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(EXAMPLES / "mug.png", folder / "mug.png")
    out = tmp_path / "o"
    argv = [
        str(HOST_PYTHON),
        "-m",
        "host",
        "batch",
        str(folder),
        "--out",
        str(out),
        "--steps",
        "2",
        "--python",
        str(worker_python),
        "--mock",
        "step_delay=0,reconstruct_delay=30",
        *batching,
    ]
    program = TerminalProgram(argv, env=dict(os.environ, TERM="dumb"), cwd=str(ROOT))
    try:
        program.expect(r"pid \d+", 30)
        grid, deadline = out / "mug_views.png", time.monotonic() + 30
        while not grid.exists():  # the grid is written (atomically) when generate_views answers
            assert time.monotonic() < deadline, "the views grid never appeared"
            time.sleep(0.05)
        program.send("\x03")
        assert program.wait(20) == 130
    finally:
        program.close()
    assert re.search(r"mug +cancelled", program.output)
    leftovers = sorted(p.name for p in out.iterdir())
    assert leftovers == [], f"an interrupted object left {leftovers}"


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data): both sides must refuse it from the
    header alone, before decoding anything."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_a_huge_input_is_refused_by_the_worker_unprepared_and_by_the_host_past_its_own_limit(
    worker_python: Path, tmp_path: Path
) -> None:
    from host.images.preparation import MAX_PREPARED_PIXELS
    from rpcworker.wire.messages import MAX_IMAGE_PIXELS

    folder = tmp_path / "in"
    folder.mkdir()
    _png_header_only(folder / "huge.png", 9000, 9000)
    done = run_batch(worker_python, folder, "--out", tmp_path / "o", "--no-preprocess")
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(rf"huge\.png: image of 9000x9000 exceeds {MAX_IMAGE_PIXELS} pixels", done.stdout + done.stderr)
    _png_header_only(folder / "huge.png", 20000, 20000)  # Pillow itself refuses this size
    done = run_batch(worker_python, folder, "--out", tmp_path / "o", "--preprocess")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"huge.png: image exceeds {MAX_PREPARED_PIXELS} pixels, the most the host prepares" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_photo_above_the_workers_pixel_limit_is_shrunk_by_the_preparation(
    worker_python: Path, tmp_path: Path
) -> None:
    """A 92 Mpixel camera photo (over the worker's 64 Mpixel limit and Pillow's warning) becomes a mesh, no warning out."""
    from PIL import Image, ImageDraw

    side = 9600
    photo = Image.new("RGB", (side, side), (255, 255, 255))
    ImageDraw.Draw(photo).ellipse((side // 4, side // 4, 3 * side // 4, 3 * side // 4), fill=(180, 60, 40))
    photo.save(tmp_path / "camera.jpg", quality=80)
    del photo
    done = run_batch(worker_python, tmp_path / "camera.jpg", "--out", tmp_path / "o")
    assert done.returncode == 0, done.stdout + done.stderr
    assert row(done.stdout, "camera")[1] == "ok"
    assert "Warning" not in done.stderr, done.stderr
    with Image.open(tmp_path / "o" / "camera_input.png") as prepared:
        assert prepared.size == (320, 320), prepared.size


OBJECTS_LINE = re.compile(
    r"objects \[[#.]{20}\] (\d+)/(\d+) done(?: \((\d+) failed\))?, (\d+) in flight, (\d+\.\d)/min, ETA (\d+:\d\d)"
)


def test_a_batching_run_says_how_many_objects_are_done_in_flight_and_left_as_each_ends(
    worker_python: Path, inputs: Path, tmp_path: Path
) -> None:
    done = run_batch(worker_python, inputs, "--out", tmp_path / "o", "--steps", "3", "--max-batch", "2")
    assert done.returncode == 1, done.stdout + done.stderr  # broken.png fails
    lines = [line for line in done.stderr.splitlines() if line.startswith("objects")]
    counted = [OBJECTS_LINE.fullmatch(line) for line in lines]
    assert lines and all(counted), done.stderr  # stderr is no terminal here: a line per object ended
    assert [int(m.group(1)) for m in counted if m] == [1, 2, 3, 4]
    assert all(m is not None and m.group(2) == "4" for m in counted)
    last = counted[-1]
    assert last is not None and (last.group(3), last.group(4), last.group(6)) == ("1", "0", "0:00")
    assert "objects [" not in done.stdout  # the status goes to stderr; the per-object lines stay on stdout
    one_at_a_time = run_batch(worker_python, inputs / "mug.png", "--out", tmp_path / "p", "--steps", "2")
    assert "objects [" not in one_at_a_time.stderr  # there each request shows its own bars


def test_on_a_terminal_the_objects_line_is_redrawn_below_the_objects_reported(
    worker_python: Path, inputs: Path, tmp_path: Path
) -> None:
    from tests.host.cli.terminal import TerminalProgram, terminal_lines

    (inputs / "broken.png").unlink()
    argv = [str(HOST_PYTHON), "-m", "host", "batch", str(inputs), "--out", str(tmp_path / "o"), "--steps", "2"]
    argv += ["--max-batch", "2", "--python", str(worker_python), "--mock", "step_delay=0"]
    program = TerminalProgram(argv, env=dict(os.environ, TERM="dumb"), cwd=str(ROOT))
    try:
        assert program.wait(60) == 0, program.output
    finally:
        program.close()
    assert re.search(r"\robjects \[#+\.*\] 2/3 done", program.output), "redrawn in place, not a line per update"
    shown = terminal_lines(program.output)
    finals = [i for i, line in enumerate(shown) if OBJECTS_LINE.fullmatch(line)]
    assert len(finals) == 1 and shown[finals[0]].startswith("objects [####################] 3/3 done, 0 in flight")
    reported = [i for i, line in enumerate(shown) if re.match(r"\[\d/3\] ", line)]
    assert len(reported) == 3 and max(reported) < finals[0], "each object's lines go above the objects line"


def test_without_rembg_a_photo_that_needs_it_fails_before_the_worker_starts(
    worker_python: Path, tmp_path: Path
) -> None:
    """The other objects go on; the line names the command that installs rembg into the host's Python."""
    from tests.host.images.rembg_stand_in import write_photo_needing_rembg

    folder = tmp_path / "in"
    photo = write_photo_needing_rembg(folder / "photo.png")
    shutil.copy(EXAMPLES / "mug.png", folder / "mug.png")
    without_rembg = "import sys; sys.modules['rembg'] = None; from host.cli.main import main; sys.exit(main())"

    def batch(inputs: Path, python: Path) -> subprocess.CompletedProcess[str]:
        command = [str(HOST_PYTHON), "-c", without_rembg, "batch", str(inputs), "--out", str(tmp_path / "o")]
        command += ["--python", str(python), "--mock", "step_delay=0", "--steps", "2"]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)

    both = batch(folder, worker_python)
    assert both.returncode == 1, both.stdout + both.stderr
    assert row(both.stdout, "mug")[1] == "ok" and row(both.stdout, "photo")[1] == "failed"
    install = f'install it with: {HOST_PYTHON} -m pip install "rembg>=2.0.50" "onnxruntime>=1.16"'
    failure = re.search(r"^  photo \(.*photo\.png\): (.*)$", both.stderr, re.MULTILINE)
    assert failure, both.stderr
    assert failure.group(1).startswith(f"{photo}: no alpha channel, no mask and no white background")
    assert install in failure.group(1)

    alone = batch(photo, tmp_path / "no-such-python")  # a worker that started would fail with exit code 2
    assert alone.returncode == 1 and "starting the worker" not in alone.stdout, alone.stdout + alone.stderr
    assert install in alone.stderr and "no-such-python" not in alone.stderr
