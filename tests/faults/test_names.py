"""Every name the file system accepts works end to end: names as long as it allows (their outputs' and temporary
names cut to fit), names that are not UTF-8, names with ``#``, ``?``, ``:``, spaces or tabs (the report's links
percent-encoded) and names holding terminal escape sequences (shown escaped). The batch CLI, the session, the API
and the pool over real pipes, the worker under Python 3.10."""

from __future__ import annotations

import html
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import HOST_PYTHON, ROOT
from tests.host.cli.terminal import TerminalProgram
from tests.host.cli.test_batch import EXAMPLES, run_batch
from tests.host.cli.test_session import PROMPT

from .conftest import host_script_env

pytestmark = pytest.mark.faults

NAME_MAX = 255
LONGEST = "é" * 120 + "a" * 11
"""251 bytes: with ``.png`` the longest name the file system takes."""
SAME_START = "é" * 120 + "a" * 5 + "c" * 6
"""Cut to fit its outputs, the same name as LONGEST: it becomes ``...-2``."""
NOT_UTF8 = os.fsdecode(b"caf\xe9")


def byte_length(name: str) -> int:
    return len(os.fsencode(name))


def long_photos(folder: Path) -> Path:
    folder.mkdir()
    for stem, source in ((LONGEST, "mug.png"), (SAME_START, "ball.png"), (NOT_UTF8, "mug.png")):
        shutil.copy(EXAMPLES / source, folder / f"{stem}.png")
    assert byte_length(f"{LONGEST}.png") == NAME_MAX
    return folder


@pytest.mark.parametrize(
    "options",
    [("--contact-sheet", "--report"), ("--max-batch", "3", "--report"), ("--no-preprocess",)],
    ids=["one-at-a-time", "in-flight", "no-preprocess"],
)
def test_names_as_long_as_the_file_system_allows_work_in_batch(
    worker_python: Path, tmp_path: Path, options: tuple[str, ...]
) -> None:
    """Photos named with the longest name the file system takes (multi-byte characters), one that meets it once
    cut, and one that is not UTF-8: every object is made, its outputs named with the stem cut at a character
    (``-2`` for the second), every name within the limit, no temporary file left; the report is written; a
    second run finds the same names and skips all three."""
    photos, out = long_photos(tmp_path / "photos"), tmp_path / "out"
    done = run_batch(worker_python, photos, "--out", out, "--steps", "2", *options)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "3 ok" in done.stdout, done.stdout
    first = "é" * 120 + "a" * 5
    second = "é" * 120 + "a" * 3 + "-2"
    assert byte_length(first) == NAME_MAX - len("_views.png") == byte_length(second)
    expected = {f"{first}.obj", f"{second}.obj", "caf\ufffd.obj"}
    assert expected <= {p.name for p in out.iterdir()}
    assert all(byte_length(p.name) <= NAME_MAX for p in out.rglob("*"))
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    if "--report" in options:
        page = (out / "index.html").read_text()
        assert page.count("<model-viewer") == 3
    again = run_batch(worker_python, photos, "--out", out, "--steps", "2", *options)
    assert again.returncode == 0 and "3 already done" in again.stdout, again.stdout + again.stderr


def test_report_links_keep_url_characters_part_of_the_name(worker_python: Path, tmp_path: Path) -> None:
    """Photos named with ``#``, ``?``, ``:``, ``%``, ``&``, spaces and a tab: every ``src`` in the report is
    percent-encoded and, decoded, names a file that exists beside the page; names show escaped in the HTML."""
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    names = ["we#ird ?:b\tx", "100% & <more>", "a:b"]
    for name in names:
        shutil.copy(EXAMPLES / "mug.png", photos / f"{name}.png")
    done = run_batch(worker_python, photos, "--out", out, "--steps", "2", "--report")
    assert done.returncode == 0, done.stdout + done.stderr
    page = (out / "index.html").read_text()
    links = [html.unescape(link) for link in re.findall(r'src="([^"]*)"', page)]
    assert len(links) == 1 + 3 + 3 * 2  # the viewer, a mesh script and two images per object
    for link in links:
        assert not re.search(r"[#?:\s&<>]", link), f"not percent-encoded: {link!r}"
        assert (out / unquote(link)).is_file(), link
    assert "100% &amp; &lt;more&gt;" in page and "we#ird ?:b\\tx" in page


def test_terminal_escapes_in_names_are_shown_escaped(worker_python: Path, tmp_path: Path) -> None:
    """A photo whose name holds an escape sequence (clear screen), a carriage return and a right-to-left override:
    the batch's every line shows them escaped (``\\x1b``, ``\\r``, ``\\u202e``) and writes none of them raw."""
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    shutil.copy(EXAMPLES / "mug.png", photos / "esc\x1b[2J\rhid\u202eden.png")
    shutil.copy(EXAMPLES / "ball.png", photos / "broken\x1b[31m.png")
    (photos / "broken\x1b[31m.png").write_bytes(b"not an image")
    done = run_batch(worker_python, photos, "--out", out, "--steps", "2")
    assert done.returncode == 1, done.stdout + done.stderr
    for text in (done.stdout, done.stderr):
        assert "\x1b" not in text and "\r" not in text and "\u202e" not in text
    assert "esc\\x1b[2J\\rhid\\u202eden" in done.stdout
    assert "broken\\x1b[31m" in done.stderr


def test_a_long_name_pasted_into_the_session_makes_its_mesh(worker_python: Path, tmp_path: Path) -> None:
    """In the interactive session, pasting the path of a photo with the longest name makes its mesh (its name cut
    to fit); a pasted path whose name is longer than the file system allows is one line and the session goes on;
    a folder of photos with escapes in their names shows them escaped."""
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    shutil.copy(EXAMPLES / "mug.png", photos / f"{LONGEST}.png")
    escaped = tmp_path / "escaped"
    escaped.mkdir()
    shutil.copy(EXAMPLES / "ball.png", escaped / "esc\x1b[2Jx.png")
    argv = [str(HOST_PYTHON), "-m", "host", "session", "--out", str(out), "--python", str(worker_python), "--mock"]
    argv += ["step_delay=0", "--steps", "2"]
    program = TerminalProgram(argv, env=dict(host_script_env(), TERM="dumb"), cwd=str(ROOT))
    try:
        program.expect(PROMPT, 60)
        program.line(str(photos / f"{LONGEST}.png"))
        program.expect(r"mesh +\d+\.\d s -> .*aaaaa\.obj", 60)
        program.expect(PROMPT)
        assert (out / f"{'é' * 120}aaaaa.obj").stat().st_size > 0
        program.line(str(photos / ("x" * 300 + ".png")))
        program.expect(r"File name too long \(type help", 30)
        program.expect(PROMPT)
        program.line(str(escaped))
        program.expect(r"esc\\x1b\[2Jx", 60)
        program.expect(PROMPT, 60)
        assert "\x1b[2J" not in program.output.split(str(escaped), 1)[1]
        program.line("status")
        program.expect(r"objects +2 done")
        program.expect(PROMPT)
        program.send("\x04")
        assert program.wait(30) == 0
    finally:
        program.close()


BAD_NAMES = ["../escape", "sub/name", "", "..", "x" * 300, NOT_UTF8]


@pytest.mark.parametrize("bad", BAD_NAMES, ids=["parent", "folder", "empty", "dot-dot", "too-long", "not-utf8"])
def test_map_names_stay_plain_file_names_inside_out_dir(
    worker_python: Path, object_png: Path, tmp_path: Path, bad: str
) -> None:
    """`map(names=[...])` with a name that has a folder in it, is ``..``, empty, longer than its outputs' names
    allow or not UTF-8: a ValueError naming ``names[1]`` before any request, nothing written anywhere."""
    from host import InstantMeshWorker

    out = tmp_path / "deep" / "out"
    with InstantMeshWorker(str(worker_python), backend="mock", prepare=False) as worker:
        with pytest.raises(ValueError, match=r"^names\[1\] ") as info:
            worker.map([object_png, object_png], out, names=["fine", bad])
        assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["object.png"]


@pytest.mark.parametrize("how", ["worker", "pool"])
def test_map_with_the_longest_file_names(worker_python: Path, tmp_path: Path, how: str) -> None:
    """`InstantMeshWorker.map` and `WorkerPool.map` of photos with the longest names (and one not UTF-8): every
    object made, named after its stem cut to fit, all names within the limit."""
    from host import InstantMeshWorker, WorkerPool

    photos = long_photos(tmp_path / "photos")
    images = sorted(photos.iterdir())
    out = tmp_path / "out"
    if how == "worker":
        with InstantMeshWorker(str(worker_python), backend="mock") as worker:
            outcomes = list(worker.map(images, out, num_inference_steps=2))
    else:
        with WorkerPool(str(worker_python), backend="mock", workers=2) as pool:
            outcomes = list(pool.map(images, out, num_inference_steps=2))
    assert all(outcome.ok for outcome in outcomes), [outcome.error for outcome in outcomes]
    assert sorted(outcome.name for outcome in outcomes) == sorted(
        ["é" * 120 + "a" * 5, "é" * 120 + "a" * 3 + "-2", "caf\ufffd"]
    )
    assert all(byte_length(p.name) <= NAME_MAX for p in out.iterdir())
