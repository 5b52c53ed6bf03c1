"""``progress=True``: bars on stderr for each request's stages and one line of objects for a map; nothing when off.

The printer and the tally are checked alone too: on a terminal the objects line stays below the lines printed
above it (``terminal_lines`` replays the bytes as a screen would), and its rate and time left follow the objects
that ended.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from host import InstantMeshWorker
from host.api.progress import ProgressPrinter
from host.api.tally import ObjectTally
from tests.host.cli.terminal import terminal_lines

OBJECTS_LINE = re.compile(
    r"objects \[[#.]{20}\] (\d+)/(\d+) done(?: \((\d+) failed\))?, (\d+) in flight, ([\d.]+|-)/min, ETA (\S+)"
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.pipe
def test_progress_draws_on_stderr_when_asked_and_not_otherwise(
    worker_python: Path, object_png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for progress in (False, True):
        with InstantMeshWorker(
            str(worker_python), backend="mock", worker_args=["--mock", "step_delay=0"], progress=progress
        ) as worker:
            worker.image_to_mesh(object_png, tmp_path / f"one-{progress}.obj", num_inference_steps=3)
            images = [object_png, tmp_path / "missing.png", object_png]
            outcomes = list(worker.map(images, tmp_path / f"map-{progress}", num_inference_steps=2))
        assert [o.ok for o in outcomes] == [True, False, True]
        captured = capsys.readouterr()
        assert captured.out == ""
        if not progress:
            assert captured.err == "", "a library is silent unless asked"
            continue
        lines = captured.err.splitlines()  # not a terminal here: a line per stage, a line per object ended
        stages = [line.strip() for line in lines if not line.startswith("objects")]
        assert stages == [
            "load: loading 1 model(s) ...",
            "views: 3 diffusion steps ...",
            "load: loading 1 model(s) ...",
            "mesh: reconstructing ...",
        ], "the map's requests draw no bars of their own: several objects are in flight at once"
        counted = [OBJECTS_LINE.fullmatch(line) for line in lines if line.startswith("objects")]
        assert all(counted), lines
        assert [(m.group(1), m.group(2)) for m in counted if m] == [("1", "3"), ("2", "3"), ("3", "3")]
        last = counted[-1]
        assert last is not None and last.group(3) == "1" and last.group(4) == "0" and last.group(6) == "0:00"


def test_on_a_terminal_the_objects_line_stays_below_the_lines_printed_above_it() -> None:
    screen = Terminal()
    printer = ProgressPrinter(screen, status_stream=screen)
    printer.status("objects 1/3 done, 2 in flight, ETA 0:20")
    printer.print("[1/3] mug")
    printer.status("objects 2/3 done, 1 in flight, ETA 0:10")
    printer.print("[2/3] box")
    printer.status("objects 3/3 done")  # shorter than the line it replaces
    printer.end_status()
    printer.print("summary")
    assert terminal_lines(screen.getvalue()) == ["[1/3] mug", "[2/3] box", "objects 3/3 done", "summary", ""]


def test_off_a_terminal_the_objects_line_is_a_line_per_update_on_its_own_stream() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = ProgressPrinter(out, status_stream=err)
    printer.status("objects 1/2 done")
    printer.print("[1/2] mug")
    printer.status("objects 2/2 done")
    printer.end_status()
    assert out.getvalue() == "[1/2] mug\n" and err.getvalue() == "objects 1/2 done\nobjects 2/2 done\n"


def test_the_tally_counts_each_object_once_with_its_rate_and_time_left() -> None:
    now = [0.0]
    heard: list[str] = []
    tally = ObjectTally(4, lambda t: heard.append(t.line()), clock=lambda: now[0])
    for name in ("a", "b", "c"):
        tally.started(name)
    assert tally.line() == "objects [....................] 0/4 done, 3 in flight, -/min, ETA -"
    now[0] = 30.0
    tally.finished("a", True)
    assert heard[-1] == "objects [#####...............] 1/4 done, 2 in flight, 2.0/min, ETA 1:30"
    tally.finished("b", True)
    tally.finished("b", False)  # the later word wins, and b is still one object
    assert heard[-1] == "objects [##########..........] 2/4 done (1 failed), 1 in flight, 4.0/min, ETA 0:30"
    now[0] = 1800.0
    tally.finished("d", True)  # ended without being sent (e.g. its input failed in the host)
    assert tally.in_flight == 1 and tally.done == 3
    assert heard[-1].endswith("0.1/min, ETA 10:00")
