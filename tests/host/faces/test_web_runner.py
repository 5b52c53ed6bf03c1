"""The web face's objects through one mock worker, without a browser: meshes in every format, a cancel that leaves
nothing behind and does not stop the others, a bad input's one-line error, names that never collide."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from host.api.facade import InstantMeshWorker
from host.api.options import ViewOptions
from host.faces.web_objects import ObjectView, WebObject
from host.faces.web_runner import ObjectRunner, pair_uploads
from tests.conftest import ROOT

pytestmark = pytest.mark.pipe

INPUTS = ROOT / "examples" / "inputs"
STEP_DELAY_S = 0.1
LONG_STEPS = 1000
"""Steps that take the mock 100 s: time enough to cancel, never waited for (the wire's most)."""
DEADLINE_S = 60.0


@pytest.fixture()
def runner(worker_python: Path, tmp_path: Path) -> Iterator[ObjectRunner]:
    worker = InstantMeshWorker(
        str(worker_python), backend="mock", worker_args=["--mock", f"step_delay={STEP_DELAY_S}"], startup_timeout=30
    )
    worker.start()
    made = ObjectRunner(worker, tmp_path / "out", lanes=2)
    try:
        yield made
    finally:
        made.close(grace=10)
        worker.close()


def _wait_for(item: WebObject, state: str | None = None) -> ObjectView:
    """The object's view once it has finished (or reached ``state``), waiting on its own changes."""
    view = item.wait_until(lambda v: v.state == state if state else not v.active, DEADLINE_S)
    assert (view.state == state) if state else not view.active, f"{item.name} still {view.state} after {DEADLINE_S} s"
    return view


def _files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def test_two_objects_give_every_format_and_a_cancel_writes_nothing(runner: ObjectRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    mug = runner.submit(INPUTS / "mug.png", None, ViewOptions(num_inference_steps=3), ("obj", "ply"), True)
    ball = runner.submit(INPUTS / "ball.png", None, ViewOptions(num_inference_steps=3), ("obj",), True)
    for item in (mug, ball):
        view = _wait_for(item)
        assert view.state == "done", view
        assert [fmt for fmt, _ in view.meshes] == ["glb", *(["obj", "ply"] if item is mug else ["obj"])]
        assert all(path.stat().st_size > 0 for _, path in view.meshes)
        assert view.shown_input == out / f"{item.name}_input.png" and view.grid == out / f"{item.name}_views.png"
        assert any(note.startswith("views: seed 42, 3 steps") for note in view.notes), view.notes
    before = _files(out)
    assert before == sorted(
        ["mug_input.png", "mug_views.png", "mug.glb", "mug.obj", "mug.ply"]
        + ["ball_input.png", "ball_views.png", "ball.glb", "ball.obj"]
    )

    slow = runner.submit(INPUTS / "mug.png", None, ViewOptions(num_inference_steps=LONG_STEPS), ("obj",), True)
    assert slow.name == "mug-2"
    running = slow.wait_until(lambda v: v.state == "views" and v.step >= 1, DEADLINE_S)
    assert running.step >= 1, running  # the worker is on it: the cancel reaches a running request
    assert slow.cancel() is True
    view = _wait_for(slow)
    assert view.state == "cancelled" and view.error is None
    assert _files(out) == before, "a cancelled object leaves no file"
    assert slow.cancel() is False


def test_a_queued_object_cancels_at_once_and_the_others_go_on(runner: ObjectRunner, tmp_path: Path) -> None:
    long = [
        runner.submit(INPUTS / "mug.png", None, ViewOptions(num_inference_steps=LONG_STEPS), (), True) for _ in "ab"
    ]
    queued = runner.submit(INPUTS / "ball.png", None, ViewOptions(num_inference_steps=3), (), True)
    assert queued.snapshot().state == "queued"  # both lanes are busy with the long ones
    assert queued.cancel() is True
    assert queued.snapshot().state == "cancelled"
    for item in long:
        item.cancel()
    after = runner.submit(INPUTS / "ball.png", None, ViewOptions(num_inference_steps=3), (), True)
    assert _wait_for(after).state == "done"
    assert [_wait_for(item).state for item in long] == ["cancelled", "cancelled"]
    assert _files(tmp_path / "out") == sorted(
        [f"{after.name}_input.png", f"{after.name}_views.png", f"{after.name}.glb"]
    )


def test_bad_input_fails_alone_with_one_line_naming_the_file(runner: ObjectRunner, tmp_path: Path) -> None:
    bad = tmp_path / "uploads" / "notes.png"
    bad.parent.mkdir()
    bad.write_text("not an image")
    failed = runner.submit(bad, None, ViewOptions(num_inference_steps=2), ("obj",), True)
    fine = runner.submit(INPUTS / "ball.png", None, ViewOptions(num_inference_steps=2), (), False)
    view = _wait_for(failed)
    assert view.state == "failed"
    assert view.error is not None and "\n" not in view.error
    assert "notes.png: not a readable image" in view.error and str(bad.parent) not in view.error, view.error
    assert _wait_for(fine).state == "done"
    assert fine.snapshot().shown_input == INPUTS / "ball.png"  # not prepared: the upload itself
    assert not any(name.startswith("notes") or name.startswith(".") for name in _files(tmp_path / "out"))


def test_names_never_collide_with_files_or_other_objects(runner: ObjectRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "box.obj").write_text("someone else's")
    first = runner.names.reserve("box", ("glb", "obj"))[0]
    second = runner.names.reserve("box", ("glb",))[0]
    assert (first, second) == ("box-2", "box-3")
    assert (out / "box.obj").read_text() == "someone else's"


def test_masks_dropped_with_their_images_pair_up(tmp_path: Path) -> None:
    for name in ("box.png", "box_mask.png", "lone_mask.png", "mug.png"):
        shutil.copyfile(INPUTS / ("box.png" if name == "lone_mask.png" else name), tmp_path / name)
    pairs = pair_uploads(tmp_path / name for name in ("box_mask.png", "mug.png", "box.png", "lone_mask.png"))
    assert pairs == [
        (tmp_path / "mug.png", None),
        (tmp_path / "box.png", tmp_path / "box_mask.png"),
        (tmp_path / "lone_mask.png", None),
    ]
