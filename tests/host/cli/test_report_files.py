"""``batch --report``'s files: a page that is not ours is never replaced without --overwrite, and a write that fails
(a full disk) is one line naming the file, with nothing partial left."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from host.cli import out_files
from host.cli.main import main
from host.cli.objects import ObjectResult
from host.cli.report import PAGE_MARK, REPORT_DIR, VIEWER_SCRIPT, ReportNotWritten, page_problem, write_report
from tests.conftest import ROOT

pytestmark = pytest.mark.cli

PHOTO = ROOT / "examples" / "inputs" / "mug.png"


def results(out: Path) -> list[ObjectResult]:
    mesh = out / "mug.glb"
    mesh.write_bytes(b"glTF fake bytes: copied as they are")
    return [ObjectResult("mug", PHOTO, "ok", mesh_path=mesh)]


def test_a_page_that_is_not_ours_is_refused_before_any_work(
    tmp_path: Path, worker_python: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    page = out / "index.html"
    page.write_text("<html>the person's own page</html>")
    code = main(
        ["batch", str(PHOTO), "--out", str(out), "--report", "--python", str(worker_python), "--mock", "step_delay=0"]
    )
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err == (
        f"error: --report: {page} exists and is not a report of instantmesh-rpc; pass --overwrite to replace it\n"
    )
    assert "starting the worker" not in captured.out
    assert page.read_text() == "<html>the person's own page</html>"
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]


def test_our_own_page_is_replaced_and_overwrite_replaces_any(tmp_path: Path) -> None:
    page = tmp_path / "index.html"
    assert page_problem(tmp_path, overwrite=False) is None
    page.write_text(f"<!doctype html>\n<html><head>{PAGE_MARK}</head></html>")
    assert page_problem(tmp_path, overwrite=False) is None
    os.unlink(page)
    page.symlink_to(tmp_path / "elsewhere.html")  # a link is nobody's report
    assert "not a report of instantmesh-rpc" in (page_problem(tmp_path, overwrite=False) or "")
    assert page_problem(tmp_path, overwrite=True) is None
    os.unlink(page)
    os.mkfifo(page)  # read without blocking
    assert page_problem(tmp_path, overwrite=False) is not None


def test_a_page_written_over_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    """The check is made again just before the page is written: a page that appeared during the run is kept."""
    made = results(tmp_path)
    (tmp_path / "index.html").write_text("appeared during the run")
    with pytest.raises(ReportNotWritten, match="pass --overwrite"):
        write_report(tmp_path, made, "mock")
    assert (tmp_path / "index.html").read_text() == "appeared during the run"
    assert PAGE_MARK in write_report(tmp_path, made, "mock", overwrite=True).read_text()


@pytest.mark.parametrize("failing", [VIEWER_SCRIPT, "mug.glb.js", "index.html"])
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    """The disk fills halfway through one file (ENOSPC after half its bytes): the report stops with one line
    naming that file, its temporary file is gone, and the earlier page is as it was."""
    made = results(tmp_path)
    earlier = write_report(tmp_path, made, "mock").read_bytes()
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd: int) -> None:
            self.fd = fd

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: Any) -> None:
            return None

        def write(self, data: bytes) -> int:
            os.write(self.fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> Any:
        written = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.basename(written).startswith(f".{os.path.splitext(failing)[0]}.partial-"):
            return FullDisk(fd)
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(out_files.os, "fdopen", fdopen)
    with pytest.raises(ReportNotWritten) as raised:
        write_report(tmp_path, made, "mock")
    where = tmp_path / REPORT_DIR / failing if failing != "index.html" else tmp_path / failing
    assert str(raised.value) == f"the report was not written: {where}: No space left on device"
    monkeypatch.undo()
    left = [p.name for folder in (tmp_path, tmp_path / REPORT_DIR) for p in folder.iterdir() if p.name.startswith(".")]
    assert left == [], f"partial files left: {left}"
    assert (tmp_path / "index.html").read_bytes() == earlier
